"""logger=[tensorboard,mlflow,wandb]: each tracker's record of a tiny run, read back with
that tool's own reader, agrees with metrics.jsonl and the TensorBoard log."""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, compose_cfg
from wgangp.config.compose import config_dir
from wgangp.config.precheck import check_group_overrides
from wgangp.config.validate import validate
from wgangp.errors import ConfigError
from wgangp.train import records
from wgangp.train.trainer import Trainer

RUN = (*TINY, "trainer.steps=10", "eval.every=5", "eval.num_samples=200")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run recorded by all three trackers: (run_dir, cfg)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    cfg = compose_cfg(*RUN, "logger=[tensorboard,mlflow,wandb]")
    run_dir = tmp_path_factory.mktemp("trackers") / "run"
    torch.set_num_threads(1)
    Trainer(cfg, run_dir, validate(cfg)).fit()
    return run_dir, cfg


def evaluations(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_series(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """The same steps, values equal to float32 precision (TensorBoard keeps float32)."""
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def tb_scalars(run_dir: Path) -> tuple[object, dict[str, list[tuple[int, float]]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    tags = acc.Tags()["scalars"]
    return acc, {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags}


def test_mlflow_run_holds_config_scalars_samples_and_final_metrics(run):
    from mlflow.tracking import MlflowClient

    run_dir, cfg = run
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert got.data.params["gp.lambda"] == str(cfg.gp["lambda"]) == "10.0"
    assert got.data.params["trainer.steps"] == "10"
    assert got.data.params["logger.mlflow.experiment"] == "wgangp"
    _, tb = tb_scalars(run_dir)
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "wasserstein")]
    assert [s for s, _ in history] == [5, 10]
    same_series(history, tb["wasserstein"])
    evals = evaluations(run_dir)
    ws = client.get_metric_history(run_id, "metrics/wasserstein")
    same_series([(m.step, m.value) for m in ws], [(e["step"], e["wasserstein"]) for e in evals])
    assert got.data.metrics["metrics/modes_captured"] == evals[-1]["modes_captured"]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == [
        "samples/step_0000010.png"
    ]


def wandb_records(run_dir: Path) -> list:
    """The records of the run's offline ``.wandb`` file, as wandb's own protobuf messages
    (the file is a LevelDB-style log: 32 KiB blocks of checksummed record chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, pos, chunk, out = path.read_bytes(), 7, b"", []  # 7: the W&B file header
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's zero-filled tail
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or the LAST chunk of a record
            rec = pb.Record()
            rec.ParseFromString(chunk)
            out.append(rec)
            chunk = b""
    return out


def test_wandb_offline_run_holds_config_scalars_samples_and_final_metrics(run):
    run_dir, cfg = run
    recs = wandb_records(run_dir)
    (start,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    assert start.run_id == json.loads((run_dir / "trackers.json").read_text())["wandb"]
    config = {i.key: json.loads(i.value_json) for i in start.config.update}
    assert config["gp.lambda"] == cfg.gp["lambda"] == 10.0 and config["trainer.steps"] == 10
    rows = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in recs
        if r.WhichOneof("record_type") == "history"
    ]
    _, tb = tb_scalars(run_dir)
    logged = [(row["_step"], row["wasserstein"]) for row in rows if "wasserstein" in row]
    same_series(logged, tb["wasserstein"])
    evals = evaluations(run_dir)
    metric = [
        (row["_step"], row["metrics/wasserstein"]) for row in rows if "metrics/wasserstein" in row
    ]
    same_series(metric, [(e["step"], e["wasserstein"]) for e in evals])
    (picture,) = [row for row in rows if "samples/path" in row]
    assert picture["_step"] == 10
    assert (start_files(run_dir) / picture["samples/path"]).is_file()
    summary = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update})
    assert summary["metrics/wasserstein"] == pytest.approx(evals[-1]["wasserstein"])


def start_files(run_dir: Path) -> Path:
    (files,) = (run_dir / "wandb").glob("offline-run-*/files")
    return files


def test_tensorboard_hparams_entry_has_config_values_and_final_metrics(run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, cfg = run
    acc, tb = tb_scalars(run_dir)
    content = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(raw)
        for tag, raw in acc.PluginTagToContent("hparams").items()
    }
    start = content["_hparams_/session_start_info"].session_start_info
    assert start.hparams["gp.lambda"].number_value == 10.0
    assert start.hparams["trainer.steps"].number_value == 10
    assert start.hparams["dataset.name"].string_value == cfg.dataset.name
    experiment = content["_hparams_/experiment"].experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"metrics/wasserstein", "metrics/modes_captured", "wasserstein"} <= metrics
    assert "perf/train_s" not in metrics
    # the dashboard shows each metric's last value in the run's scalars
    assert tb["metrics/wasserstein"][-1][1] == pytest.approx(
        evaluations(run_dir)[-1]["wasserstein"]
    )
    end = content["_hparams_/session_end_info"].session_end_info
    assert end.status == 1  # STATUS_SUCCESS


def test_tensorboard_is_the_default_and_alone_writes_no_other_record(tmp_path):
    cfg = compose_cfg(*TINY, "trainer.steps=5")
    assert cfg.logger.tensorboard.hparams and cfg.logger.mlflow is None
    Trainer(cfg, tmp_path, validate(cfg)).fit()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in ("tb", "mlruns", "wandb")) == [
        "tb"
    ]
    assert not (tmp_path / "trackers.json").exists()


def test_ranks_above_zero_record_nothing(tmp_path):
    cfg = compose_cfg(*TINY, "logger=[tensorboard,mlflow,wandb]")
    writer = records.open_run_log(tmp_path, 0, False, cfg)
    writer.add_scalar("wasserstein", 1.0, 1)
    writer.log_final({"wasserstein": 1.0}, 1)
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch):
    cfg = compose_cfg(*TINY, "logger=[tensorboard,mlflow]")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    ready = "tensorboard | wandb" if find_spec("wandb") else "tensorboard"
    assert str(e.value) == (
        f"invalid value for logger: 'mlflow' (allowed: {ready}, or several: "
        "logger=[tensorboard,mlflow]); the mlflow package is not installed: "
        "pip install 'wgangp[mlflow]'"
    )


def test_an_unknown_logger_name_is_one_line():
    assert check_group_overrides(["logger=[tensorboard,neptune]"], config_dir()) == (
        "invalid option for logger: 'neptune' in '[tensorboard,neptune]' "
        "(allowed: mlflow | tensorboard | wandb)"
    )
    cfg = compose_cfg(*TINY, "logger=wandb", "logger.wandb.mode=cloud")
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == (
        "invalid value for logger.wandb.mode: 'cloud' (allowed: offline | online | disabled); "
        "offline needs no network"
    )


def test_a_resumed_run_continues_its_mlflow_and_wandb_runs(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    from wgangp.io.checkpoint import load_checkpoint

    base = (*TINY, "logger=[mlflow,wandb]", "trainer.sample_every=0")
    cfg = compose_cfg(*base, "trainer.steps=5")
    Trainer(cfg, tmp_path, validate(cfg)).fit()
    ids = json.loads((tmp_path / "trackers.json").read_text())
    cfg = compose_cfg(*base, "trainer.steps=10")
    resumed = Trainer(cfg, tmp_path, validate(cfg))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last.pt"))
    resumed.fit()
    assert json.loads((tmp_path / "trackers.json").read_text()) == ids
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (only,) = client.search_runs([client.get_experiment_by_name("wgangp").experiment_id])
    assert only.info.run_id == ids["mlflow"] and only.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "wasserstein")] == [5, 10]
    assert only.data.params["trainer.steps"] == "5"  # MLflow keeps a parameter's first value
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, with "-1" added when both runs start in the same second
    run_ids = [re.fullmatch(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)(-\d+)?", r.name) for r in runs]
    assert len(runs) == 2 and all(m and m.group(1) == ids["wandb"] for m in run_ids), runs
    assert not (tmp_path / "tb").exists()  # logger without tensorboard: no event log


def test_a_tracker_failing_mid_run_stops_with_one_line_after_a_checkpoint(tmp_path, monkeypatch):
    """An unreachable tracker costs no training: the run saves the step it reached
    (like a TensorBoard write failure) and says how to go on."""
    pytest.importorskip("mlflow")
    from wgangp.io.checkpoint import load_checkpoint
    from wgangp.io.trackers import mlflow_run
    from wgangp.io.trackers.base import TrackerError

    real = mlflow_run.MlflowTracker.log_scalars

    def failing(self, values, step):
        if step >= 10:
            raise TrackerError(self.name, self.uri, ConnectionError("server went away"))
        return real(self, values, step)

    monkeypatch.setattr(mlflow_run.MlflowTracker, "log_scalars", failing)
    cfg = compose_cfg(*TINY, "trainer.steps=20", "eval.every=0", "logger=[tensorboard,mlflow]")
    run_dir = tmp_path / "run"
    with pytest.raises(TrackerError) as e:
        Trainer(cfg, run_dir, validate(cfg)).fit()
    last = run_dir / "checkpoints" / "last.pt"
    assert str(e.value) == (
        f"cannot log to mlflow at {(run_dir / 'mlruns').resolve().as_uri()} at step 10 "
        f"(server went away); training stopped; checkpoint of step 10 saved: {last}; fix "
        f"logger.mlflow (or drop mlflow from logger=), then continue with resume={run_dir}"
    )
    assert load_checkpoint(last)["step"] == 10
