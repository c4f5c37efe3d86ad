"""wgangp-export: TorchScript, ONNX and safetensors files reproduce the checkpoint's
generator, and their JSON says what a consumer needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

import wgangp
from tests.conftest import REPO, pythonpath
from tests.test_api import conditional as _conditional
from tests.test_api import images as _images
from tests.test_api import toy as _toy
from wgangp.cli.export import main
from wgangp.errors import ConfigError
from wgangp.inference.export import export_generator, load_safetensors
from wgangp.io.checkpoint import load_checkpoint

# the module-scoped runs of test_api (a points run with an EMA, a [0, 1] image run that
# samples with batch statistics, a two-class conditional image run)
toy, images, conditional = _toy, _images, _conditional
# torch.jit.load warns that TorchScript is deprecated upstream; these tests load it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def export_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wgangp.cli.export", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": pythonpath(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def seeded(n: int, z_dim: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def test_the_command_writes_the_file_and_its_json(toy, tmp_path):
    out = tmp_path / "g.pt"
    proc = export_cli(f"checkpoint={toy}", "format=torchscript", f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}, {out}.json"
    meta = json.loads(Path(f"{out}.json").read_text())
    ckpt = load_checkpoint(toy / "checkpoints" / "last.pt")
    assert meta["format"] == "wgangp-generator" and meta["file_format"] == "torchscript"
    assert meta["wgangp_version"] and meta["config"] == ckpt["config"]
    assert (meta["kind"], meta["z_dim"], meta["output_shape"], meta["sample_shape"]) == (
        "points",
        2,
        [2],
        [2],
    )
    assert (meta["num_classes"], meta["pixel_range"], meta["ema"], meta["step"]) == (
        0,
        None,
        True,
        3,
    )
    assert meta["inputs"] == [{"name": "z", "shape": ["N", 2], "dtype": "float32"}]
    assert meta["output"] == {"name": "samples", "shape": ["N", 2], "dtype": "float32"}
    z = seeded(50, 2)
    with torch.no_grad():
        want = wgangp.load_generator(toy)(z)
    torch.testing.assert_close(torch.jit.load(str(out))(z), want, rtol=0, atol=1e-6)


def test_onnx_reproduces_the_generator_for_any_batch_size(toy, tmp_path):
    gen = wgangp.load_generator(toy)
    out, meta = export_generator(gen, "onnx", tmp_path / "g.onnx")
    onnx.checker.check_model(str(out))
    assert json.loads(meta.read_text())["file_format"] == "onnx"
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in runtime.get_inputs()] == ["z"]
    for n in (1, 7, 300):
        z = seeded(n, 2)
        (got,) = runtime.run(None, {"z": z.numpy()})
        with torch.no_grad():
            want = gen(z).numpy()
        assert got.shape == (n, 2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_safetensors_holds_the_state_dict_only_and_loads_back_bitwise(toy, tmp_path):
    gen = wgangp.load_generator(toy)
    out, _ = export_generator(gen, "safetensors", tmp_path / "g.safetensors")
    state = gen.network.state_dict()
    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == sorted(state)
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            assert torch.equal(f.get_tensor(name), state[name]), name
    back = load_safetensors(out)
    assert (back.kind, back.z_dim, back.num_classes, back.ema) == ("points", 2, 0, True)
    assert torch.equal(wgangp.sample(back, 100, seed=4), wgangp.sample(gen, 100, seed=4))


def test_a_conditional_image_run_exports_with_labels(conditional, tmp_path):
    gen = wgangp.load_generator(conditional)
    z, labels = seeded(6, gen.z_dim), torch.tensor([1, 0, 1, 1, 0, 0])
    with torch.no_grad():
        want = gen(z, labels)
    scripted = torch.jit.load(str(export_generator(gen, "torchscript", tmp_path / "g.pt")[0]))
    torch.testing.assert_close(scripted(z, labels), want, rtol=0, atol=1e-6)
    assert not torch.equal(scripted(z, 1 - labels), scripted(z, labels))  # labels matter
    out, meta_path = export_generator(gen, "onnx", tmp_path / "g.onnx")
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = runtime.run(None, {"z": z.numpy(), "labels": labels.numpy()})
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    meta = json.loads(meta_path.read_text())
    assert (meta["kind"], meta["num_classes"], meta["pixel_range"]) == ("image", 2, [-1.0, 1.0])
    assert meta["inputs"][1] == {"name": "labels", "shape": ["N"], "dtype": "int64"}
    assert meta["output"]["shape"] == ["N", 1, 16, 16]
    back = load_safetensors(export_generator(gen, "safetensors", tmp_path / "g.st")[0])
    assert torch.equal(wgangp.sample(back, 6, labels=labels), wgangp.sample(gen, 6, labels=labels))


def test_batch_statistics_export_to_torchscript_and_are_refused_by_onnx(images, tmp_path):
    gen = wgangp.load_generator(images)  # eval.bn=batch
    out, meta = export_generator(gen, "torchscript", tmp_path / "g.pt")
    assert json.loads(meta.read_text())["bn"] == "batch"
    z = seeded(8, gen.z_dim, seed=0)
    scripted = torch.jit.load(str(out))
    # wgangp.sample(seed=0) draws the same latents; one batch of 8
    torch.testing.assert_close(scripted(z), wgangp.sample(gen, 8, seed=0), rtol=0, atol=1e-6)
    proc = export_cli(
        f"checkpoint={images}", "format=onnx", f"out={tmp_path / 'g.onnx'}", cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "wgangp-export: error: invalid value for bn: 'batch' (allowed: running with "
        "format=onnx); ONNX's inference batch norm normalises with fixed statistics: export "
        "with bn=running, or use format=torchscript for each batch's own statistics\n"
    )
    assert not (tmp_path / "g.onnx").exists()
    out, _ = export_generator(gen, "onnx", tmp_path / "g.onnx", bn="running")
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = runtime.run(None, {"z": z.numpy()})
    want = wgangp.sample(gen, 8, seed=0, bn="running")
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)


def test_a_text_run_exports_symbol_indices(tmp_path):
    from tests.test_text import tiny_run, write_shards
    from wgangp.train.trainer import Trainer

    write_shards(tmp_path, [40])
    cfg = tiny_run(tmp_path, "trainer.steps=2", "trainer.sample_every=0")
    Trainer(cfg, tmp_path / "run", torch.device("cpu")).fit()
    gen = wgangp.load_generator(tmp_path / "run")
    want = wgangp.sample(gen, 10, seed=0)
    z = seeded(10, gen.z_dim, seed=0)
    scripted = torch.jit.load(str(export_generator(gen, "torchscript", tmp_path / "t.pt")[0]))
    assert torch.equal(scripted(z), want)
    out, meta = export_generator(gen, "onnx", tmp_path / "t.onnx")
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.array_equal(runtime.run(None, {"z": z.numpy()})[0], want.numpy())
    meta = json.loads(meta.read_text())
    assert meta["kind"] == "text" and meta["symbols"] == list(gen.symbols)
    assert meta["output"] == {"name": "samples", "shape": ["N", 8], "dtype": "int64"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["format=pt"],
            "invalid value for format: 'pt' (allowed: torchscript | onnx | safetensors); "
            "torchscript: torch.jit.load runs it; onnx: onnxruntime and other ONNX runtimes; "
            "safetensors: the weights for the model built from the JSON's config",
        ),
        (["format=onnx", "bn=eval"], "invalid value for bn: 'eval' (allowed: running | batch)"),
        (["format=onnx", "ema=maybe"], "invalid value for ema:"),
        (["format=onnx", "out="], "invalid value for out: None (allowed: a file path)"),
        (["format=onnx", "out=/proc/g.onnx"], "invalid value for out: '/proc/g.onnx'"),
        (["format=onnx", "checkpoint=/nowhere"], "checkpoint /nowhere: no such file or directory"),
        (["format=onnx", "oops"], "invalid value for oops: 'oops' (allowed: key=value arguments)"),
    ],
)
def test_mistakes_get_one_line_and_exit_2(toy, tmp_path, capsys, args, message):
    argv = [f"checkpoint={toy}", f"out={tmp_path / 'g'}"]
    keys = {a.split("=")[0] for a in args}
    argv = [a for a in argv if a.split("=")[0] not in keys] + args
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"wgangp-export: error: {message}"), err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("fmt", "module"), [("onnx", "onnxruntime"), ("safetensors", "safetensors")]
)
def test_a_missing_extra_is_named(toy, tmp_path, capsys, monkeypatch, fmt, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails
    with pytest.raises(SystemExit) as e:
        main([f"checkpoint={toy}", f"format={fmt}", f"out={tmp_path / 'g'}"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"wgangp-export: error: invalid value for format: '{fmt}' (allowed: torchscript, or "
        f"onnx and safetensors with the export extra installed); format={fmt} needs the "
        f"package {module}, which is not installed: pip install 'wgangp[export]'\n"
    )
    with pytest.raises(ConfigError, match=r"pip install 'wgangp\[export\]'"):
        export_generator(wgangp.load_generator(toy), fmt, tmp_path / "g")
    assert not list(tmp_path.iterdir())
