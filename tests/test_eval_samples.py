"""``wgangp-eval samples=…``: any folder or .npz of images against a folder, a data set
or a mu/sigma .npz, with the stand-in feature network of tests/test_eval.py (no
Inception download)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_eval import StandIn
from wgangp.cli.eval import main as eval_main
from wgangp.data.image_folder import folder_fingerprint
from wgangp.metrics import evaluator as evaluate
from wgangp.metrics import sample_sets
from wgangp.metrics.evaluator import dataset_id
from wgangp.metrics.image_scores import feature_statistics, frechet_distance


def make_images(root: Path, n: int = 30, seed: int = 0) -> Path:
    """``n`` 16×16 grayscale PNGs: a bright square at a random place on a dark ground."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((16, 16), 20, np.uint8)
        y, x = rng.integers(0, 9, size=2)
        img[y : y + 7, x : x + 7] = 235
        Image.fromarray(img).save(root / f"{i:03d}.png")
    return root


@pytest.fixture
def standin(monkeypatch) -> StandIn:
    ext = StandIn()
    monkeypatch.setattr(evaluate, "make_extractor", lambda cfg, device: ext)
    return ext


def run_eval(capsys, *argv: str) -> tuple[str, dict]:
    """Run wgangp-eval with ``json=``; its printed text and the JSON it wrote."""
    out = Path(argv[-1].split("=", 1)[1]) if argv[-1].startswith("json=") else None
    eval_main(list(argv))
    text = capsys.readouterr().out
    return text, (json.loads(out.read_text()) if out else {})


def test_folder_against_itself_scores_zero_and_says_the_resize(tmp_path, standin, capsys):
    images = make_images(tmp_path / "a")
    text, got = run_eval(
        capsys,
        f"samples={images}",
        f"ref={images}",
        "metrics=fid,kid",
        f"stats_cache={tmp_path / 'cache'}",
        f"json={tmp_path / 'm.json'}",
    )
    # identical features: ‖μ−μ‖² = 0 and tr(2Σ − 2(Σ²)^½) is sqrtm's round-off alone
    assert abs(got["metrics"]["fid"]) < 1e-6
    assert got["num_samples"] == 30 and got["resize"] == "legacy_tensorflow"
    assert "resize: legacy_tensorflow (TF1-compatible bilinear to 299x299" in text
    assert "samples: " in text and "(30 images)" in text and "| fid |" in text


def test_save_ref_roundtrip_and_scoring_against_the_file(tmp_path, standin, capsys):
    real = make_images(tmp_path / "real", n=30, seed=0)
    fake = make_images(tmp_path / "fake", n=24, seed=1)
    cache = f"stats_cache={tmp_path / 'cache'}"
    ref_file = tmp_path / "ref" / "real_stats.npz"
    _, by_folder = run_eval(
        capsys, f"samples={fake}", f"ref={real}", f"save_ref={ref_file}", cache,
        f"json={tmp_path / 'a.json'}",
    )  # fmt: skip
    # what was written is the folder's fp64 statistics, bit for bit
    feats = torch.cat([standin(b)["pool"] for b in sample_sets.folder_batches("r", real, 100)])
    mu, sigma = feature_statistics(feats)
    with np.load(ref_file) as f:
        assert sorted(f.files) == ["mu", "sigma"]
        assert f["mu"].dtype == np.float64 and f["sigma"].shape == (12, 12)
        assert torch.equal(torch.from_numpy(f["mu"]), mu)
        assert torch.equal(torch.from_numpy(f["sigma"]), sigma)
    _, by_file = run_eval(
        capsys, f"samples={fake}", f"ref={ref_file}", cache, f"json={tmp_path / 'b.json'}"
    )
    assert by_file["metrics"]["fid"] == by_folder["metrics"]["fid"]
    fake_feats = torch.cat([standin(b)["pool"] for b in sample_sets.folder_batches("s", fake, 100)])
    expected = frechet_distance(*feature_statistics(fake_feats), mu, sigma)
    assert by_file["metrics"]["fid"] == expected and expected > 0.1
    # save_ref alone: no samples needed
    again = tmp_path / "again.npz"
    eval_main([f"ref={real}", f"save_ref={again}", cache])
    assert "written to" in capsys.readouterr().out
    with np.load(again) as a, np.load(ref_file) as b:
        assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["sigma"], b["sigma"])


def test_npz_samples_uint8_nchw_nhwc_and_float_score_as_the_folder(tmp_path, standin, capsys):
    real = make_images(tmp_path / "real", n=30, seed=0)
    fake = make_images(tmp_path / "fake", n=24, seed=1)
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted(fake.glob("*.png"))])
    cache = f"stats_cache={tmp_path / 'cache'}"
    _, ref = run_eval(
        capsys, f"samples={fake}", f"ref={real}", cache, f"json={tmp_path / 'f.json'}"
    )
    arrays = {
        "nchw": pixels[:, None],
        "nhwc": np.repeat(pixels[..., None], 3, axis=3),
        "float": pixels[:, None].astype(np.float32) / 127.5 - 1,  # [-1, 1]
    }
    for name, x in arrays.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, samples=x)
        _, got = run_eval(
            capsys, f"samples={path}", f"ref={real}", cache, f"json={tmp_path / 'n.json'}"
        )
        assert got["metrics"]["fid"] == pytest.approx(ref["metrics"]["fid"], rel=1e-5), name


def test_edited_folder_gets_fresh_statistics(tmp_path, standin, capsys):
    real = make_images(tmp_path / "real", n=30)
    fake = make_images(tmp_path / "fake", n=24, seed=1)
    argv = [f"samples={fake}", f"ref={real}", f"stats_cache={tmp_path / 'cache'}"]
    print_0 = folder_fingerprint(real)
    eval_main(argv)
    assert standin.calls == 2  # the samples, then the reference (30 ≤ one batch)
    eval_main(argv)
    assert standin.calls == 3  # the reference's statistics came from the cache
    # a file added: new key, statistics recomputed
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(real / "new.png")
    eval_main(argv)
    assert standin.calls == 5 and len(list((tmp_path / "cache").glob("*.pt"))) == 2
    # a file touched (same name, same size, newer time): recomputed again
    st = (real / "000.png").stat()
    os.utime(real / "000.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    eval_main(argv)
    assert standin.calls == 7
    capsys.readouterr()
    # the training evaluator's cache key follows the content too, not the path
    ds = {"name": "image_folder", "root": str(real), "crop": "center", "channels": 1}
    key = dataset_id(_Cfg(ds))
    assert folder_fingerprint(real)[:16] in key and folder_fingerprint(real) != print_0
    moved = tmp_path / "moved"
    real.rename(moved)
    assert dataset_id(_Cfg({**ds, "root": str(moved)})) == key


class _Cfg(dict):
    """A dict read like a DictConfig (``.name``)."""

    def __getattr__(self, name: str):  # noqa: ANN204
        return self[name]


def test_clean_resize_is_pil_bicubic_per_channel(tmp_path, standin, monkeypatch, capsys):
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = sample_sets.CleanResize(standin, size=23).resize(x)
    chan = Image.fromarray(x[1, 2].numpy().astype(np.float32)).resize(
        (23, 23), resample=Image.Resampling.BICUBIC
    )
    expected = np.clip(np.rint(np.asarray(chan)), 0, 255).astype(np.uint8)
    assert out.shape == (2, 3, 23, 23) and np.array_equal(out[1, 2].numpy(), expected)
    # the CLI's resize=clean, on the stand-in's 16×16 input: named in the output
    monkeypatch.setattr(sample_sets, "INCEPTION_SIZE", 16)
    images = make_images(tmp_path / "a")
    text, got = run_eval(
        capsys, f"samples={images}", f"ref={images}", "resize=clean",
        f"stats_cache={tmp_path / 'c'}", f"json={tmp_path / 'm.json'}",
    )  # fmt: skip
    assert "resize: clean (PIL bicubic to 299x299 per image, rounded to 8 bits (clean-fid))" in text
    assert abs(got["metrics"]["fid"]) < 1e-6 and got["resize"] == "clean"


def errors(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        eval_main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err.strip()


def test_bad_inputs_get_one_clear_line(tmp_path, standin, capsys):
    real = make_images(tmp_path / "real", n=10)
    cache = f"stats_cache={tmp_path / 'cache'}"
    bad = make_images(tmp_path / "bad", n=4)
    (bad / "002.png").write_bytes(b"not a png")
    assert errors(capsys, f"samples={bad}", f"ref={real}", cache) == (
        f"wgangp-eval: error: samples={str(bad)!r}: cannot decode {bad / '002.png'} (cannot "
        f"identify image file {str(bad / '002.png')!r}); remove or replace it"
    )
    no_samples = tmp_path / "x.npz"
    np.savez(no_samples, images=np.zeros((4, 3, 16, 16), np.uint8))
    assert errors(capsys, f"samples={no_samples}", f"ref={real}", cache) == (
        f"wgangp-eval: error: invalid value for samples: {str(no_samples)!r} (allowed: an .npz "
        "with the array 'samples'); it holds ['images']; save with np.savez(path, samples=x)"
    )
    wrong_shape = tmp_path / "y.npz"
    np.savez(wrong_shape, samples=np.zeros((4, 16, 16), np.uint8))
    assert errors(capsys, f"samples={wrong_shape}", f"ref={real}", cache) == (
        f"wgangp-eval: error: invalid value for samples: {str(wrong_shape)!r} (allowed: "
        "samples of shape NxCxHxW or NxHxWxC with C = 1 or 3); its samples are 4x16x16"
    )
    out_of_range = tmp_path / "z.npz"
    np.savez(out_of_range, samples=np.full((4, 1, 16, 16), 255.0, np.float32))
    assert errors(capsys, f"samples={out_of_range}", f"ref={real}", cache) == (
        f"wgangp-eval: error: invalid value for samples: {str(out_of_range)!r} (allowed: float "
        "samples in the data's pixel range [-1, 1]); its values span [255, 255]; store uint8 "
        "in [0, 255]"
    )
    no_stats = tmp_path / "ref.npz"
    np.savez(no_stats, mean=np.zeros(12))
    assert errors(capsys, f"samples={real}", f"ref={no_stats}", cache) == (
        f"wgangp-eval: error: invalid value for ref: {str(no_stats)!r} (allowed: an .npz of "
        "reference statistics with the arrays 'mu' and 'sigma'); it holds ['mean']; write "
        "one with save_ref=PATH"
    )
    assert errors(capsys, f"samples={real}") == (
        "wgangp-eval: error: invalid value for ref: None (allowed: exactly one reference: "
        "ref=FOLDER_OR_NPZ or dataset=NAME [dataset.KEY=…]); e.g. ref=real_images/ or "
        "dataset=cifar10 dataset.root=~/data"
    )
    assert "resize: 'bicubic' (allowed: legacy_tensorflow | clean)" in errors(
        capsys, f"samples={real}", f"ref={real}", "resize=bicubic"
    )
    assert "(allowed: against a mu/sigma .npz reference: a comma-separated list of: fid, is)" in (
        errors(capsys, f"samples={real}", f"ref={tmp_path / 'ref.npz'}", "metrics=kid")
    )


def test_data_set_reference_as_training_sees_it(tmp_path, standin, capsys):
    images = make_images(tmp_path / "a")
    ref_file = tmp_path / "ds.npz"
    text, got = run_eval(
        capsys, f"samples={images}", "dataset=image_folder", f"dataset.root={images}",
        "dataset.image_size=16", "dataset.channels=1", "dataset.num_workers=0",
        "num_samples=30", f"save_ref={ref_file}", f"stats_cache={tmp_path / 'c'}",
        f"json={tmp_path / 'm.json'}",
    )  # fmt: skip
    # the 30 images, drawn without replacement at their own size: the folder itself
    assert abs(got["metrics"]["fid"]) < 1e-6
    assert f"dataset=image_folder (image_folder-{folder_fingerprint(images)[:16]}" in text
    with np.load(ref_file) as f:
        assert f["mu"].shape == (12,) and f["sigma"].shape == (12, 12)
    assert "dataset.root" in errors(
        capsys, f"samples={images}", "dataset=image_folder", f"dataset.root={tmp_path / 'no'}"
    )
