"""dataset.standardize: points train in standardized coordinates, so a recipe does not
depend on the data's units, and everything a user sees is in the data's units."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import wgangp
from tests.conftest import TINY, compose_cfg
from wgangp.config.validate import validate
from wgangp.data import build_data
from wgangp.data.standardize import Standardization
from wgangp.errors import ConfigError
from wgangp.inference.export import export_generator, load_safetensors
from wgangp.io.checkpoint import atomic_save, load_checkpoint
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
# torch.jit.load warns that TorchScript is deprecated upstream; the export test loads it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
#: a 4-mode set far from the origin, in units of ~1 (its mean (3, -2), spread ~1.3)
CENTRES = np.array([[2.0, -3.0], [4.0, -3.0], [2.0, -1.0], [4.0, -1.0]])
STD = 0.1


def mixture(n: int = 2000, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    k = np.arange(n) % len(CENTRES)
    return CENTRES[k] + STD * g.standard_normal((n, 2))


def points_args(path: Path, factor: float = 1.0, *extra: str) -> list[str]:
    modes = ",".join(f"[{float(x * factor)!r},{float(y * factor)!r}]" for x, y in CENTRES)
    return [
        *TINY,
        "dataset=points",
        f"dataset.path={path}",
        f"dataset.modes=[{modes}]",
        f"dataset.mode_std={STD * factor!r}",
        "recipe=paper",
        *extra,
    ]


def train(run_dir: Path, args: list[str], steps: int = 20) -> Trainer:
    cfg = compose_cfg(
        *args,
        f"trainer.steps={steps}",
        f"eval.every={steps}",
        "eval.num_samples=512",
        "eval.metrics=[modes_captured,high_quality,reverse_kl,wasserstein]",
        "trainer.sample_every=0",
    )
    trainer = Trainer(cfg, run_dir, validate(cfg))
    trainer.fit()
    return trainer


def scaled_file(tmp_path: Path, factor: float) -> Path:
    path = tmp_path / f"points_x{factor}.npy"
    np.save(path, mixture() * factor)  # float64: the file's own values, scaled exactly
    return path


# ------------------------------------------------------------------------- the transform
def test_global_per_dim_and_none_are_the_textbook_statistics():
    x = torch.tensor([[0.0, 10.0], [2.0, 10.0], [4.0, 40.0], [6.0, 40.0]], dtype=torch.float64)
    # per coordinate: means 3 and 25, variances 5 and 225
    g = Standardization.of(x, "global")
    assert g.mean.tolist() == [3.0, 25.0]
    assert g.scale.tolist() == pytest.approx([(115.0) ** 0.5] * 2)  # sqrt((5 + 225) / 2)
    p = Standardization.of(x, "per_dim")
    assert p.scale.tolist() == pytest.approx([5.0**0.5, 15.0])
    y = p.forward(x)
    assert torch.allclose(y.mean(0), torch.zeros(2, dtype=torch.float64)) and torch.allclose(
        y.var(0, unbiased=False), torch.ones(2, dtype=torch.float64)
    )
    assert torch.allclose(p.inverse(y), x, rtol=0, atol=1e-12)
    n = Standardization.of(x, "none")
    assert n.is_identity and n.forward(x) is x and n.inverse(x) is x
    # a constant coordinate keeps its units
    c = Standardization.of(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), "per_dim")
    assert c.scale.tolist() == [1.0, 1.0] and c.mean.tolist() == [2.0, 5.0]
    assert Standardization.from_state(g.state_dict(), 2) == g


def test_a_file_is_standardized_from_its_points_or_given_statistics(tmp_path):
    path = scaled_file(tmp_path, 100.0)
    raw = torch.from_numpy(np.load(path).astype(np.float32)).double()
    src = build_data(compose_cfg(*points_args(path, 100.0)).dataset, 64, CPU, 0)
    st = src.standardization
    assert st.mode == "global"
    assert torch.allclose(st.mean, raw.mean(0))
    assert float(st.scale[0]) == pytest.approx(float(raw.var(0, unbiased=False).mean().sqrt()))
    batch = src.data
    assert abs(float(batch.mean())) < 1e-5 and float(batch.pow(2).mean()) == pytest.approx(1, 1e-4)
    # modes and mode_std stay in the file's units
    assert src.modes.tolist() == (CENTRES * 100).tolist() and src.mode_std == pytest.approx(10)
    given = build_data(
        compose_cfg(
            *points_args(path, 100.0),
            "dataset.standardize=per_dim",
            "dataset.standardize_mean=[300,-200]",
            "dataset.standardize_scale=[50,25]",
        ).dataset,
        64,
        CPU,
        0,
    )
    assert given.standardization.mean.tolist() == [300.0, -200.0]
    assert torch.allclose(
        given.data, ((raw - torch.tensor([300.0, -200.0])) / torch.tensor([50.0, 25.0])).float()
    )
    none = build_data(
        compose_cfg(*points_args(path, 100.0), "dataset.standardize=none").dataset, 64, CPU, 0
    )
    assert none.standardization.is_identity and torch.equal(none.data, raw.float())


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["dataset.standardize=zscore"],
            "invalid value for dataset.standardize: 'zscore' (allowed: global | per_dim | none)",
        ),
        (
            ["dataset.standardize_scale=[1,2]"],
            "invalid value for dataset.standardize_scale: [1.0, 2.0] (allowed: one number "
            "with dataset.standardize=global)",
        ),
        (
            ["dataset.standardize_scale=-1"],
            "invalid value for dataset.standardize_scale: -1 (allowed: numbers > 0); "
            "the data's spread",
        ),
        (
            ["dataset.standardize_mean=[1,2,3]"],
            "invalid value for dataset.standardize_mean: [1, 2, 3] (allowed: a list of 2 numbers)",
        ),
        (
            ["dataset.standardize=none", "dataset.standardize_scale=2"],
            "invalid value for dataset.standardize_scale: 2 (allowed: null with "
            "dataset.standardize=none)",
        ),
    ],
)
def test_bad_statistics_get_one_line(tmp_path, extra, message):
    path = scaled_file(tmp_path, 1.0)
    with pytest.raises(ConfigError) as e:
        cfg = compose_cfg(*points_args(path), *extra)
        validate(cfg)
        build_data(cfg.dataset, 64, CPU, 0)
    assert str(e.value).startswith(message)


def test_the_built_in_sets_are_drawn_standardized(tmp_path):
    """Their transform is the identity at the default scale (published numbers stand
    bitwise); dataset.scale=4 moves only the units the user sees: the same training, to
    the bit (4 / 2 is a power of two), and samples twice as large."""
    for name in ("gaussians8", "gaussians25", "swissroll"):
        st = build_data(compose_cfg(f"dataset={name}").dataset, 8, CPU, 0).standardization
        assert st.is_identity, name
    base = train(tmp_path / "base", [*TINY, "dataset=gaussians8", "recipe=paper"], steps=6)
    big = train(
        tmp_path / "big",
        [*TINY, "dataset=gaussians8", "recipe=paper", "dataset.scale=4", "dataset.noise=0.04"],
        steps=6,
    )
    for p, q in zip(base.generator.parameters(), big.generator.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (
        torch.equal(big.data.modes, 2 * base.data.modes)
        and big.data.mode_std == 2 * base.data.mode_std
    )
    a = wgangp.sample(wgangp.load_generator(tmp_path / "base"), 64, seed=1)
    b = wgangp.sample(wgangp.load_generator(tmp_path / "big"), 64, seed=1)
    assert torch.equal(b, 2 * a)
    with pytest.raises(
        ConfigError, match=r"dataset.standardize_scale: 2.0 \(allowed: null for gaussians8\)"
    ):
        build_data(
            compose_cfg("dataset=gaussians8", "dataset.standardize_scale=2.0").dataset, 8, CPU, 0
        )


# -------------------------------------------------------------- the same run in any units
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same points set in three units, trained with the same seed."""
    root = tmp_path_factory.mktemp("units")
    out = {}
    for factor in (1.0, 0.01, 100.0):
        path = scaled_file(root, factor)
        train(root / f"x{factor}", points_args(path, factor))
        out[factor] = root / f"x{factor}"
    return out


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.parametrize("factor", [0.01, 100.0])
def test_a_scaled_set_trains_to_the_same_samples_up_to_the_factor(runs, factor):
    base = wgangp.sample(wgangp.load_generator(runs[1.0]), 512, seed=3).double()
    scaled = wgangp.sample(wgangp.load_generator(runs[factor]), 512, seed=3).double()
    assert base.std() > 0.3  # a trained generator, not a point
    # fp32 training of data equal up to rounding: ~2e-6 apart on a spread of 2
    assert torch.allclose(scaled / factor, base, rtol=0, atol=1e-4), float(
        (scaled / factor - base).abs().max()
    )
    # the metrics in the data's units: counts equal, distances scaled by the factor
    m1, mf = metrics(runs[1.0]), metrics(runs[factor])
    assert mf["modes_captured"] == m1["modes_captured"] and mf["high_quality"] == m1["high_quality"]
    assert mf["reverse_kl"] == pytest.approx(m1["reverse_kl"], abs=1e-9)
    assert mf["wasserstein"] == pytest.approx(factor * m1["wasserstein"], rel=1e-3)
    assert mf["wasserstein_real"] == pytest.approx(factor * m1["wasserstein_real"], rel=1e-6)


def test_without_standardization_the_units_change_the_run(tmp_path):
    """What the default prevents: in the data's units, ×100 trains another generator."""
    base = train(
        tmp_path / "a", points_args(scaled_file(tmp_path, 1.0), 1.0, "dataset.standardize=none")
    )
    big = train(
        tmp_path / "b", points_args(scaled_file(tmp_path, 100.0), 100.0, "dataset.standardize=none")
    )
    a = wgangp.sample(wgangp.load_generator(tmp_path / "a"), 512, seed=3)
    b = wgangp.sample(wgangp.load_generator(tmp_path / "b"), 512, seed=3)
    assert (b / 100 - a).abs().max() > 0.5
    del base, big


def test_samples_npz_critic_and_exports_are_in_the_data_units(runs, tmp_path):
    run = runs[100.0]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    gen = wgangp.load_generator(run)
    st = gen.standardization
    assert ckpt["standardize"] == st.state_dict() and st.mode == "global"
    z = torch.randn(256, gen.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = gen.network(z)
        x = gen(z)
    assert torch.allclose(x, raw * st.scale.float() + st.mean.float())
    assert 100 < float(x[:, 0].mean()) < 500  # around the data's mean (300, -200)
    # wgangp-sample's file holds the same numbers
    from wgangp.cli.sample import main as sample_main

    sample_main([f"checkpoint={run}", "n=256", "seed=0", f"out={tmp_path / 's.npz'}"])
    assert torch.allclose(
        torch.from_numpy(np.load(tmp_path / "s.npz")["samples"]), wgangp.sample(gen, 256, seed=0)
    )
    # the critic takes the data's units
    critic = wgangp.load_critic(run)
    with torch.no_grad():
        assert torch.equal(critic(x), critic.network(st.forward(x)))
    # exports: the transform is in TorchScript and ONNX files and in the JSON
    export_generator(gen, "torchscript", tmp_path / "g.pt")
    export_generator(gen, "onnx", tmp_path / "g.onnx")
    export_generator(gen, "safetensors", tmp_path / "g.safetensors")
    meta = json.loads((tmp_path / "g.onnx.json").read_text())
    assert meta["standardize"] == st.state_dict()
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "g.pt"))(z), x, atol=1e-4)
    runtime = ort.InferenceSession(str(tmp_path / "g.onnx"))
    (onnx_x,) = runtime.run(None, {"z": z.numpy()})
    assert np.allclose(onnx_x, x.numpy(), rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        assert torch.equal(load_safetensors(tmp_path / "g.safetensors")(z), x)


def test_wgangp_eval_reports_the_runs_metrics_in_the_data_units(runs, tmp_path):
    from wgangp.cli.eval import main as eval_main

    run = runs[100.0]
    out = tmp_path / "m.json"
    eval_main(
        [
            f"checkpoint={run}",
            "metrics=[modes_captured,high_quality,wasserstein]",
            "num_samples=512",
            f"json={out}",
            "ema=false",
        ]
    )
    got = json.loads(out.read_text())["metrics"]
    assert got["wasserstein"] == pytest.approx(metrics(run)["wasserstein"], rel=1e-6)
    assert got["wasserstein_real"] == pytest.approx(metrics(run)["wasserstein_real"], rel=1e-6)
    assert got["high_quality"] == metrics(run)["high_quality"]


def test_the_scatter_picture_is_drawn_in_the_data_units(runs, tmp_path, monkeypatch):
    from wgangp.train import artifacts

    seen = {}

    def capture(fake, real, critic, title=""):
        seen.update(fake=fake, real=real, critic=critic)
        raise StopIteration  # nothing to draw

    monkeypatch.setattr(artifacts, "scatter_figure", capture)
    trainer = Trainer(
        compose_cfg(*points_args(scaled_file(tmp_path, 100.0), 100.0), "trainer.steps=0"),
        tmp_path / "run",
        CPU,
    )
    with pytest.raises(StopIteration):
        trainer.pictures.samples(trainer.generator, trainer.critic, 0, None)
    real, critic = seen["real"], seen["critic"]
    assert 250 < float(real[:, 0].mean()) < 350 and -250 < float(real[:, 1].mean()) < -150
    st = trainer.data.standardization
    with torch.no_grad():
        assert torch.equal(critic(real), trainer.critic(st.forward(real)))


# ------------------------------------------------------------ checkpoints and resumes
def test_a_checkpoint_from_before_standardization_samples_in_its_units(runs, tmp_path, caplog):
    """Older runs trained in the data's units and stored no transform: they load and
    sample as before, and a resume keeps training in those units."""
    ckpt = load_checkpoint(runs[100.0] / "checkpoints" / "last.pt")
    del ckpt["standardize"]
    old = tmp_path / "old" / "checkpoints" / "last.pt"
    old.parent.mkdir(parents=True)
    atomic_save(ckpt, old)
    gen = wgangp.load_generator(old)
    assert gen.standardization.is_identity
    z = torch.randn(16, gen.z_dim)
    with torch.no_grad():
        assert torch.equal(gen(z), gen.network(z))
    cfg = compose_cfg(
        *points_args(Path(ckpt["config"]["dataset"]["path"]), 100.0), "trainer.steps=21"
    )
    trainer = Trainer(cfg, tmp_path / "old", CPU)
    with caplog.at_level(logging.WARNING):
        trainer.load_state_dict(load_checkpoint(old), old)
    assert "was trained in the data's units; the run keeps them" in caplog.text
    assert trainer.data.standardization.is_identity
    raw = torch.from_numpy(np.load(ckpt["config"]["dataset"]["path"]).astype(np.float32))
    assert torch.equal(trainer.data.data, raw)


def test_a_resume_keeps_the_checkpoints_transform_when_the_file_moved(runs, tmp_path, caplog):
    ckpt_path = runs[1.0] / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    moved = tmp_path / "moved.npy"
    np.save(moved, mixture() * 2 + 1)
    cfg = compose_cfg(*points_args(moved), "trainer.steps=21")
    trainer = Trainer(cfg, tmp_path / "run", CPU)
    with caplog.at_level(logging.WARNING):
        trainer.load_state_dict(ckpt, ckpt_path)
    assert "the run keeps the checkpoint's" in caplog.text
    assert trainer.data.standardization.state_dict() == ckpt["standardize"]
