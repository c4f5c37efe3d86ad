"""User mistakes in toy data settings, points files and the output paths of the
helper commands: one clear ``error:`` line and exit code 2, before any work is lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, cli, compose_cfg
from tests.test_eval import StandIn
from tests.test_images_e2e import IMG, make_folder
from wgangp.cli import eval as eval_cli
from wgangp.cli.sample import main as sample_main
from wgangp.cli.sweep_report import main as report_main
from wgangp.data import build_data
from wgangp.errors import ConfigError, DataError
from wgangp.metrics import evaluator as evaluate
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
SMALL = [*TINY, "critic.dim=16", "generator.dim=16", "trainer.batch_size=8"]
QUIET = ["trainer.sample_every=0", "trainer.ckpt_every=0", "trainer.log_every=1"]


def toy(*overrides: str):
    return build_data(compose_cfg(*overrides).dataset, 8, CPU, 0)


# --------------------------------------------------------------------------- toy data


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["dataset.noise=0"],
            "invalid value for dataset.noise: 0.0 (allowed: a finite number > 0 for gaussians8); "
            "e.g. dataset.noise=0.02 (the default), or drop the override",
        ),
        (
            ["dataset.noise=-1"],
            "invalid value for dataset.noise: -1.0 (allowed: a finite number > 0",
        ),
        (
            ["dataset.scale=nan"],
            "invalid value for dataset.scale: nan (allowed: a finite number > 0",
        ),
        (["dataset.scale=0"], "invalid value for dataset.scale: 0.0 (allowed: a finite number > 0"),
        (
            ["dataset=gaussians25", "dataset.scale=inf"],
            "invalid value for dataset.scale: inf (allowed: a finite number > 0 for gaussians25)",
        ),
        (
            ["dataset=swissroll", "dataset.noise=inf"],
            "invalid value for dataset.noise: inf (allowed: a finite number ≥ 0 for swissroll); "
            "e.g. dataset.noise=0.25",
        ),
        (["dataset=swissroll", "dataset.noise=-0.1"], "dataset.noise: -0.1 (allowed: a finite"),
    ],
)
def test_bad_toy_scale_and_noise_are_config_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        toy(*overrides)
    assert message in str(e.value), str(e.value)
    assert e.value.exit_code == 2


def test_good_toy_settings_still_build():
    assert toy("dataset=swissroll", "dataset.noise=0").noise == 0.0  # a noiseless roll is fine
    src = toy("dataset.noise=0.1", "dataset.scale=3")
    assert src.mode_std == pytest.approx(0.1 / 1.414)


def test_zero_toy_noise_stops_the_run_before_training(tmp_path):
    # used to train, then crash at the first evaluation with "mode_std must be positive"
    proc = cli(
        *SMALL,
        *QUIET,
        "trainer.steps=2",
        "dataset.noise=0",
        "eval.every=2",
        "eval.num_samples=50",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "wgangp: error: invalid value for dataset.noise: 0.0" in proc.stderr
    assert "Traceback" not in proc.stderr and "mode_std must be positive" not in proc.stderr


# --------------------------------------------------------------------------- points


def points(path: Path, *extra: str):
    cfg = compose_cfg("dataset=points", f"dataset.path={path}", *extra)
    return build_data(cfg.dataset, 4, CPU, 0)


def test_points_file_of_strings_is_a_data_error(tmp_path):
    path = tmp_path / "words.npy"
    np.save(path, np.array([["a", "b"]] * 50))
    with pytest.raises(DataError) as e:
        points(path)
    assert str(e.value) == (
        f"dataset.path={str(path)!r}: expected an N×D array of real numbers, got dtype <U1; "
        "save the points as floats"
    )


@pytest.mark.parametrize(
    "modes,shown",
    [
        ("[[a,0],[1,1]]", "[['a', 0], [1, 1]]"),
        ("[[0,0],[1]]", "[[0, 0], [1]]"),
        ("[[0,0],[1,nan]]", "[[0, 0], [1, nan]]"),
        ("[]", "[]"),
    ],
)
def test_malformed_points_modes_are_config_errors(tmp_path, modes, shown):
    np.save(tmp_path / "p.npy", np.zeros((8, 2)))
    with pytest.raises(ConfigError) as e:
        points(tmp_path / "p.npy", f"dataset.modes={modes}", "dataset.mode_std=0.1")
    msg = str(e.value)
    assert msg.startswith(f"invalid value for dataset.modes: {shown} (allowed: a list of K points")
    assert "of dimension 2, e.g. [[0,0],[1,1]]" in msg


def test_non_finite_points_mode_std_is_a_config_error(tmp_path):
    np.save(tmp_path / "p.npy", np.zeros((8, 2)))
    with pytest.raises(ConfigError, match=r"invalid value for dataset.mode_std: nan"):
        points(tmp_path / "p.npy", "dataset.modes=[[0,0]]", "dataset.mode_std=nan")


# --------------------------------------------------------------------------- output paths


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy")
    Trainer(compose_cfg(*SMALL, *QUIET, "trainer.steps=2"), run, CPU).fit()
    return run


def bad_places(tmp_path: Path) -> tuple[Path, Path]:
    afile, adir = tmp_path / "afile", tmp_path / "adir"
    afile.write_text("x")
    adir.mkdir()
    return afile, adir


def exits_2(fn, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_wgangp_eval_checks_json_before_computing_metrics(toy_run, tmp_path, capsys, monkeypatch):
    afile, adir = bad_places(tmp_path)
    monkeypatch.setattr(eval_cli, "evaluate_checkpoint", lambda args: pytest.fail("metrics ran"))
    for out, reason in (
        (afile / "x.json", f"{afile} is not a directory"),
        (adir, f"{adir} is a directory"),
        (Path("/proc/x.json"), "cannot create files in /proc"),
    ):
        err = exits_2(eval_cli.main, [f"checkpoint={toy_run}", f"json={out}"], capsys)
        assert err.startswith(f"wgangp-eval: error: invalid value for json: {str(out)!r} "), err
        assert reason in err and "choose another json=PATH" in err, err


def test_wgangp_sample_checks_out_before_sampling(toy_run, tmp_path, capsys, monkeypatch):
    afile, _ = bad_places(tmp_path)
    monkeypatch.setattr("wgangp.cli.sample.load_with_checkpoint", lambda *a: pytest.fail("sampled"))
    for out, reason in (
        (afile / "x.png", f"{afile} is not a directory"),
        (Path("/proc/x.npz"), "cannot create files in /proc"),
        (afile, f"{afile} is a file, not a directory"),
        (tmp_path / "x.jpg", "a .png, .npz or .txt (text runs) file, or a directory (no suffix)"),
    ):
        err = exits_2(sample_main, [f"checkpoint={toy_run}", "n=4", f"out={out}"], capsys)
        assert err.startswith(f"wgangp-sample: error: invalid value for out: {str(out)!r} "), err
        assert reason in err, err


def test_sweep_report_checks_out_and_metric(toy_run, tmp_path, capsys):
    afile, _ = bad_places(tmp_path)
    assert report_main([str(toy_run), "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wgangp-sweep-report: error: invalid value for --out: '{afile}/sub'")
    assert f"{afile} is not a directory; choose another --out=PATH" in err
    # a metric nobody logged: an error listing the ones that exist, not a table of dashes
    assert report_main([str(toy_run), "--metric", "nope", "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        "wgangp-sweep-report: error: invalid value for --metric: 'nope' "
        "(allowed: a TensorBoard tag the jobs logged: "
    )
    assert "wasserstein" in captured.err and "loss/critic" in captured.err
    assert "pick one of them with --metric TAG" in captured.err
    assert not (tmp_path / "r").exists()
    assert report_main([str(toy_run), "--metric", "gp", "--out", str(tmp_path / "r")]) == 0
    assert "final_gp" in capsys.readouterr().out


def test_sweep_report_default_metric_never_logged(tmp_path, capsys):
    """Without --metric the runs' optimized_metric is reported: if no job logged it,
    the same error as a wrong --metric, not a table of dashes."""
    run = tmp_path / "job"
    cfg = compose_cfg(*SMALL, *QUIET, "trainer.steps=2", "optimized_metric=metrics/fid")
    Trainer(cfg, run, CPU).fit()
    assert report_main([str(run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "wgangp-sweep-report: error: invalid value for --metric: \"metrics/fid (the runs' "
        'optimized_metric)" (allowed: a TensorBoard tag the jobs logged: '
    ), err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- wgangp-eval


@pytest.fixture(scope="module")
def small_image_run(tmp_path_factory) -> Path:
    """A run on 40 images with batches of 8: fewer images than eval's old batch of 64."""
    root = tmp_path_factory.mktemp("img")
    data = make_folder(root / "images", n=40)
    cfg = compose_cfg(
        *IMG,
        f"dataset.root={data}",
        "trainer.batch_size=8",
        "trainer.steps=1",
        "eval.download=false",  # offline: no download attempt in the tests
        *QUIET,
    )
    Trainer(cfg, root / "run", CPU).fit()
    return root / "run"


def test_wgangp_eval_works_on_a_data_set_smaller_than_64(
    small_image_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(evaluate, "make_extractor", lambda cfg, device: StandIn())
    eval_cli.main(
        [
            f"checkpoint={small_image_run}",
            "num_samples=20",
            "metrics=fid",
            f"stats_cache={tmp_path / 'stats'}",
            "device=cpu",
        ]
    )
    assert "| fid |" in capsys.readouterr().out


def test_wgangp_eval_messages_name_its_own_options(
    small_image_run, tmp_path, capsys, caplog, monkeypatch
):
    err = exits_2(eval_cli.main, [f"checkpoint={small_image_run}", "device=gpu7"], capsys)
    assert err == (
        "wgangp-eval: error: invalid value for device: 'gpu7' "
        "(allowed: auto | cpu | cuda | cuda:N)\n"
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no Inception weights
    base = [f"checkpoint={small_image_run}", "num_samples=20", "metrics=fid", "device=cpu"]
    err = exits_2(eval_cli.main, base, capsys)
    assert err.startswith("wgangp-eval: error: Inception weights for FID/KID/IS"), err
    assert "pass inception_weights=PATH to " in err and "eval." not in err, err
    missing = tmp_path / "nope.pth"
    err = exits_2(eval_cli.main, [*base, f"inception_weights={missing}"], capsys)
    assert err.startswith(f"wgangp-eval: error: inception_weights={str(missing)!r}: no such file")
    assert "training continues" not in caplog.text + err
