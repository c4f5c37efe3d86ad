"""Text (dataset=billion_word; gan_language.py): the loader against the official one, the
one-hot stream, the 1-D residual networks, the run's sample files and metrics, sampling
from a checkpoint, and the errors. The n-gram JS metric itself: tests/test_text_metrics.py."""

from __future__ import annotations

import collections
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg, serve_directory
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.data import build_data
from wgangp.data import text as text_lib
from wgangp.data.text import BILLION_WORD_DIR, TRAIN_DIR, TRAIN_FILES
from wgangp.errors import ConfigError, DataError
from wgangp.models import build_critic, build_generator, count_parameters
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "dog",
    "ran",
    "to",
    "big",
    "red",
    "house",
    "with",
    "café",
    "über",
    "naïve",
]


def write_shards(root: Path, lines_per_shard: list[int], seed: int = 0, inner: bool = True) -> Path:
    """Billion Word's training shards under ``root`` (inside the archive's folder when
    ``inner``), shard k holding ``lines_per_shard[k-1]`` lines of random words."""
    rng = np.random.default_rng(seed)
    base = (root / BILLION_WORD_DIR if inner else root) / TRAIN_DIR
    base.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(lines_per_shard, start=1):
        lines = [
            " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(1, 12))) + " ."
            for _ in range(n)
        ]
        (base / TRAIN_FILES[k - 1]).write_text("".join(f"{s}\n" for s in lines), "utf-8")
    return base


def official_lines(shards: Path, max_length: int, max_n: int) -> list[tuple[int, ...]]:
    """language_helpers.load_dataset's lines under Python 2 (a line is its bytes): cut to
    max_length, padded with ` (before its shuffle, which only reorders)."""
    lines: list[tuple[int, ...]] = []
    for name in TRAIN_FILES:
        with open(shards / name, "rb") as f:
            for raw in f:
                line = tuple(raw[:-1])[:max_length]
                lines.append(line + (ord("`"),) * (max_length - len(line)))
                if len(lines) == max_n:
                    return lines
    return lines


def dataset_cfg(root: Path, *extra: str):
    return compose_cfg("dataset=billion_word", f"dataset.root={root}", *extra).dataset


# --------------------------------------------------------------------------- loading


def test_lines_and_vocabulary_are_the_official_loaders(tmp_path):
    shards = write_shards(tmp_path, [40, 40, 40])
    cfg = dataset_cfg(tmp_path, "dataset.seq_len=20", "dataset.max_examples=97")
    src = build_data(cfg, 8, CPU, seed=0)
    want = official_lines(shards, 20, 97)  # stops 17 lines into the third shard
    assert src.data.shape == (97, 20) and src.data.dtype == torch.int16
    symbols = src.vocab.symbols
    assert symbols[0] == "unk" and src.sample_shape == (len(symbols), 20)
    got = [tuple(ord(symbols[i]) for i in row) for row in src.data.tolist()]
    assert got == want
    # the vocabulary: every byte, most frequent first (ties by code)
    counts = collections.Counter(b for line in want for b in line)
    order = sorted(counts, key=lambda b: (-counts[b], b))
    assert [ord(s) for s in symbols[1:]] == order


def test_a_small_vocabulary_maps_rare_symbols_to_unk(tmp_path):
    shards = write_shards(tmp_path, [30])
    src = build_data(dataset_cfg(tmp_path, "dataset.max_vocab=6"), 8, CPU, seed=0)
    want = official_lines(shards, 32, 30)
    counts = collections.Counter(b for line in want for b in line)
    kept = sorted(counts, key=lambda b: (-counts[b], b))[:5]
    index = {b: i + 1 for i, b in enumerate(kept)}
    expected = torch.tensor([[index.get(b, 0) for b in line] for line in want], dtype=torch.int16)
    assert len(src.vocab) == 6 and torch.equal(src.data, expected)
    assert (src.data == 0).any()  # some bytes were rare


def test_bytes_and_characters(tmp_path):
    base = tmp_path / TRAIN_DIR
    base.mkdir()
    (base / TRAIN_FILES[0]).write_bytes("café\n\nü".encode())  # no newline at the end
    by = build_data(dataset_cfg(tmp_path, "dataset.seq_len=6"), 1, CPU, seed=0)
    ch = build_data(dataset_cfg(tmp_path, "dataset.seq_len=6", "dataset.unit=char"), 1, CPU, 0)
    # root may be the archive's folder itself (the official DATA_DIR); 3 lines each
    assert [by.vocab.decode(r) for r in by.data] == ["café`", "``````", "ü````"]
    assert [ch.vocab.decode(r) for r in ch.data] == ["café``", "``````", "ü`````"]
    assert len(by.vocab) == 1 + len(set("caf`") | {0xC3, 0xA9, 0xBC})
    assert set(ch.vocab.symbols[1:]) == set("caféü`")
    # a cut through a multi-byte character decodes to U+FFFD, as does unk
    assert by.vocab.decode([by.vocab.symbols.index("c"), by.vocab.symbols.index("\xc3"), 0]) == (
        "c\ufffd\ufffd"
    )


def test_one_hot_batches_follow_the_stored_lines_and_resume(tmp_path):
    write_shards(tmp_path, [50])
    src = build_data(dataset_cfg(tmp_path, "dataset.seq_len=12"), 8, CPU, seed=3)
    v = src.sample_shape[0]
    for _ in range(9):  # past an epoch boundary (6 batches an epoch)
        start = src.index
        x = src.next_batch()
        assert x.shape == (8, v, 12) and x.dtype == torch.float32
        assert torch.equal(x.sum(1), torch.ones(8, 12))
        rows = src._perm[start : start + 8] if start + 8 <= 50 else None
        if rows is not None:
            assert torch.equal(x.argmax(1), src.data[rows].long())
    a = build_data(dataset_cfg(tmp_path, "dataset.seq_len=12"), 8, CPU, seed=3)
    b = build_data(dataset_cfg(tmp_path, "dataset.seq_len=12"), 8, CPU, seed=3)
    for _ in range(4):
        a.next_batch()
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        assert torch.equal(a.next_batch(), b.next_batch())


def test_missing_and_gapped_shards_are_named(tmp_path):
    with pytest.raises(DataError) as e:
        build_data(dataset_cfg(tmp_path / "nowhere"), 8, CPU, seed=0)
    msg = str(e.value)
    assert f"{BILLION_WORD_DIR}/{TRAIN_DIR}/{TRAIN_FILES[0]}" in msg
    assert "dataset.download=true" in msg and "dataset.root=" in msg
    shards = write_shards(tmp_path, [10, 10, 10])
    (shards / TRAIN_FILES[1]).unlink()
    with pytest.raises(DataError, match=f"{TRAIN_FILES[1]} is missing but {TRAIN_FILES[2]}"):
        build_data(dataset_cfg(tmp_path), 8, CPU, seed=0)
    empty = write_shards(tmp_path / "empty", [0])
    assert (empty / TRAIN_FILES[0]).stat().st_size == 0
    with pytest.raises(DataError, match="hold no lines"):
        build_data(dataset_cfg(tmp_path / "empty"), 8, CPU, 0)
    # what the shards before the gap hold is enough: read, and the gap never reached
    assert (
        build_data(dataset_cfg(tmp_path, "dataset.max_examples=10"), 8, CPU, 0).data.shape[0] == 10
    )


def test_download_fetches_and_unpacks_the_archive(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_shards(src, [20])
    archive = tmp_path / "bw.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / BILLION_WORD_DIR, arcname=BILLION_WORD_DIR)
    with serve_directory(tmp_path) as url:
        monkeypatch.setattr(text_lib, "BILLION_WORD_URL", f"{url}/{archive.name}")
        root = tmp_path / "data"
        data = build_data(dataset_cfg(root, "dataset.download=true"), 8, CPU, seed=0)
        assert data.data.shape == (20, 32)
        assert (root / BILLION_WORD_DIR / TRAIN_DIR / TRAIN_FILES[0]).is_file()
        # the server has no such file: a DataError naming the URL and what to do instead
        monkeypatch.setattr(text_lib, "BILLION_WORD_URL", f"{url}/none.tgz")
        with pytest.raises(DataError, match="none.tgz into .* failed.*download and unpack it"):
            build_data(dataset_cfg(tmp_path / "empty", "dataset.download=true"), 8, CPU, seed=0)


# --------------------------------------------------------------------------- networks


def net_cfg(**kw):
    return compose_cfg("dataset=billion_word", *(f"{k}={v}" for k, v in kw.items()))


def test_official_parameter_counts_and_init():
    cfg = net_cfg()
    critic = build_critic(cfg.critic, (60, 32))
    gen = build_generator(cfg.generator, (60, 32))
    # critic: 1×1 conv 60→512, 5 blocks of two 512→512 width-5 convs, linear 32·512→1
    block = 2 * (512 * 512 * 5 + 512)
    assert count_parameters(critic) == (60 * 512 + 512) + 5 * block + (32 * 512 + 1)
    # generator: linear 128→32·512, 5 blocks, 1×1 conv 512→60
    assert count_parameters(gen) == (128 * 32 * 512 + 32 * 512) + 5 * block + (512 * 60 + 60)
    # tflib: convs he-uniform with fan_in = C_in·k, fan_out = C_out·k; linears glorot
    conv = critic.blocks[0].conv1.weight
    bound = math.sqrt(3) * math.sqrt(4 / (512 * 5 + 512 * 5))
    assert conv.abs().max() <= bound and conv.abs().max() > 0.99 * bound
    assert abs(conv.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    lin = gen.input.weight
    glorot = math.sqrt(3) * math.sqrt(2 / (128 + 32 * 512))
    assert lin.abs().max() <= glorot and lin.abs().max() > 0.99 * glorot
    assert all(b.abs().max() == 0 for n, b in critic.named_parameters() if n.endswith("bias"))


def test_generator_gives_distributions_and_the_critic_scores_them():
    cfg = net_cfg(**{"critic.dim": 8, "generator.dim": 8, "critic.depth": 2, "generator.depth": 2})
    torch.manual_seed(0)
    gen, critic = build_generator(cfg.generator, (7, 10)), build_critic(cfg.critic, (7, 10))
    x = gen(torch.randn(5, 128))
    assert x.shape == (5, 7, 10) and (x > 0).all()
    torch.testing.assert_close(x.sum(1), torch.ones(5, 10))
    assert critic(x).shape == (5,)
    # the residual block, by hand: h + 0.3·conv2(relu(conv1(relu(h))))
    blk, h = critic.blocks[0], torch.randn(3, 8, 10)
    c1, c2 = blk.conv1, blk.conv2
    manual = h + 0.3 * torch.nn.functional.conv1d(
        torch.relu(torch.nn.functional.conv1d(torch.relu(h), c1.weight, c1.bias, padding=2)),
        c2.weight,
        c2.bias,
        padding=2,
    )
    torch.testing.assert_close(blk(h), manual)


def test_penalty_on_sequences_is_per_sample_over_symbols_and_positions():
    cfg = net_cfg(**{"critic.dim": 8, "critic.depth": 1})
    torch.manual_seed(1)
    critic = build_critic(cfg.critic, (5, 6)).double()
    real = torch.nn.functional.one_hot(torch.randint(0, 5, (4, 6)), 5).transpose(1, 2).double()
    fake = torch.softmax(torch.randn(4, 5, 6, dtype=torch.float64), 1)
    eps = torch.rand(4, 1, 1, dtype=torch.float64)
    gp = losses.gradient_penalty(critic, real, fake, eps=eps)
    norms = []
    for i in range(4):
        xi = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_()
        (g,) = torch.autograd.grad(critic(xi).sum(), xi)
        norms.append(g.norm())
    want = torch.stack([(n - 1) ** 2 for n in norms]).mean()
    torch.testing.assert_close(gp.penalty, want)
    torch.testing.assert_close(gp.grad_norm, torch.stack(norms))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["critic.norm=layernorm"], "critic.norm"),
        (["generator.activation=tanh"], "generator.activation"),
        (["critic.depth=0"], "critic.depth"),
    ],
)
def test_network_options_the_official_model_does_not_have(overrides, key):
    cfg = compose_cfg("dataset=billion_word", *overrides)
    with pytest.raises(ConfigError) as e:
        build_critic(cfg.critic, (5, 6))
        build_generator(cfg.generator, (5, 6))
    assert e.value.key == key


# --------------------------------------------------------------------------- the run


def tiny_run(root: Path, *extra: str):
    return compose_cfg(
        "experiment=language_paper",
        f"dataset.root={root}",
        "dataset.seq_len=8",
        "critic.dim=8",
        "generator.dim=8",
        "critic.depth=1",
        "generator.depth=1",
        "generator.z_dim=8",
        "trainer.batch_size=8",
        "trainer.n_critic=2",
        "trainer.progress=false",
        "trainer.log_every=2",
        *extra,
    )


def test_a_run_writes_text_samples_metrics_and_a_decodable_checkpoint(tmp_path):
    write_shards(tmp_path, [60])
    cfg = tiny_run(tmp_path, "trainer.steps=4", "trainer.sample_every=2", "eval.every=2")
    tr = Trainer(cfg, tmp_path / "run", validate(cfg))
    tr.fit()
    samples = tmp_path / "run" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == [
        "real.txt",
        "step_0000002.txt",
        "step_0000004.txt",
    ]
    lines = (samples / "step_0000004.txt").read_text("utf-8").splitlines()
    assert len(lines) == 64 and all(len(s) <= 8 for s in lines)
    real = (samples / "real.txt").read_text("utf-8").splitlines()
    assert len(real) == 64 and all(set(s) <= set("".join(WORDS) + " .`\ufffd") for s in real)
    import json

    evals = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        for n in range(1, 5):
            assert 0 <= e[f"js{n}_real"] < e[f"js{n}"] <= 1
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["vocab"]["unit"] == "byte" and ckpt["vocab"]["symbols"][0] == "unk"
    assert tuple(ckpt["vocab"]["symbols"]) == tr.data.vocab.symbols


def test_text_run_resumes_bitwise(tmp_path):
    write_shards(tmp_path, [60])
    cfg = tiny_run(tmp_path, "trainer.steps=6", "trainer.sample_every=0")
    full = Trainer(cfg, tmp_path / "a", CPU)
    full.fit()
    half = Trainer(
        tiny_run(tmp_path, "trainer.steps=3", "trainer.sample_every=0"), tmp_path / "b", CPU
    )
    half.fit()
    resumed = Trainer(cfg, tmp_path / "b", CPU)
    resumed.load_state_dict(
        torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    )
    resumed.fit()
    for a, b in zip(full.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.precision=bf16"],
        ["speed.batch_fakes=true", "speed.fuse_real_fake=false"],
        ["trainer.ema.decay=0.9", "gp.every=2"],
        ["speed.native_conv_grads=false", "speed.detach_relu_masks=false"],
        ["speed.nan_check=iteration", "trainer.gen_batch_size=12"],
    ],
)
def test_the_text_step_under_the_trainer_options(tmp_path, options):
    write_shards(tmp_path, [40])
    t = Trainer(tiny_run(tmp_path, *options), tmp_path / "run", CPU)
    params = {f"critic.{n}": p for n, p in t.critic.named_parameters()}
    params |= {f"generator.{n}": p for n, p in t.generator.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(3):
        stats = t.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    # the critic's last two biases add a constant to every score: E[D(x̃)] − E[D(x)]
    # cancels it and ∇x D does not see it, so their gradient is 0 (up to rounding,
    # which Adam's normalisation turns into steps of size lr on some paths)
    constant = {"critic.output.bias", "critic.blocks.0.conv2.bias"}
    assert set(params) - constant <= changed


def test_resuming_on_another_vocabulary_is_refused(tmp_path):
    from wgangp.errors import CheckpointError

    write_shards(tmp_path, [60])
    Trainer(
        tiny_run(tmp_path, "trainer.steps=1", "trainer.sample_every=0"), tmp_path / "a", CPU
    ).fit()
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)
    # another corpus with as many symbols: the same shapes, other meanings
    ckpt["vocab"]["symbols"] = ("unk", *reversed(ckpt["vocab"]["symbols"][1:]))
    with pytest.raises(CheckpointError, match="vocabulary .* differs .* from index 1 on"):
        Trainer(tiny_run(tmp_path), tmp_path / "c", CPU).load_state_dict(ckpt)


def test_detached_masks_give_the_plain_penalty_gradients(tmp_path):
    """The trainer's penalty path (ReLU masks detached) against plain autograd."""
    write_shards(tmp_path, [40])
    grads = []
    for detach in ("true", "false"):
        tr = Trainer(
            tiny_run(tmp_path, f"speed.detach_relu_masks={detach}"), tmp_path / detach, CPU
        )
        torch.manual_seed(0)
        real = tr.data.next_batch()
        fake = tr.generator(torch.randn(8, 8)).detach()
        eps = torch.rand(8, 1, 1)
        tr.opt_c.zero_grad()
        tr.critic_step(real, fake, eps=eps)
        grads.append([p.grad.clone() for p in tr.critic.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- sampling


def test_wgangp_sample_writes_text_and_indices(tmp_path):
    from wgangp.cli.sample import sample

    write_shards(tmp_path, [40])
    cfg = tiny_run(tmp_path, "trainer.steps=2", "trainer.sample_every=0")
    tr = Trainer(cfg, tmp_path / "run", CPU)
    tr.fit()
    run = str(tmp_path / "run")
    (txt,) = sample([f"checkpoint={run}", "n=10", f"out={tmp_path / 's.txt'}"])
    lines = txt.read_text("utf-8").splitlines()
    (npz,) = sample([f"checkpoint={run}", "n=10", f"out={tmp_path / 's.npz'}"])
    arrays = np.load(npz)
    assert arrays["samples"].shape == (10, 8) and list(arrays["vocab"]) == list(
        tr.data.vocab.symbols
    )
    assert lines == [tr.data.vocab.decode(row) for row in arrays["samples"]]
    both = sample([f"checkpoint={run}", "n=3", f"out={tmp_path / 'dir'}"])
    assert sorted(p.name for p in both) == ["samples.npz", "samples.txt"]
    with pytest.raises(ConfigError, match="a .txt or .npz file"):
        sample([f"checkpoint={run}", "n=3", f"out={tmp_path / 's.png'}"])
    assert not (tmp_path / "s.png").exists()


def test_wgangp_eval_scores_a_text_checkpoint(tmp_path, capsys):
    """No Inception network is looked for: the n-gram metrics need none."""
    import json

    from wgangp.cli.eval import main

    write_shards(tmp_path, [40])
    Trainer(
        tiny_run(tmp_path, "trainer.steps=2", "trainer.sample_every=0"), tmp_path / "run", CPU
    ).fit()
    out = tmp_path / "m.json"
    main([f"checkpoint={tmp_path / 'run'}", "num_samples=50", "metrics=js1,js3", f"json={out}"])
    metrics = json.loads(out.read_text())["metrics"]
    assert sorted(metrics) == ["js1", "js1_real", "js3", "js3_real"]
    assert 0 < metrics["js1_real"] < metrics["js1"] <= 1
    assert "skipped" not in capsys.readouterr().err


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["critic.name=mlp"], "critic.name"),
        (["generator.name=dcgan"], "generator.name"),
        (["dataset.unit=word"], "dataset.unit"),
        (["dataset.seq_len=0"], "dataset.seq_len"),
        (["dataset.max_vocab=1"], "dataset.max_vocab"),
        (["conditional.enabled=true"], "conditional.enabled"),
    ],
)
def test_config_errors_before_any_work(overrides, key):
    cfg = compose_cfg("experiment=language_paper", "dataset.root=/nonexistent", *overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.key == key


def test_language_networks_refuse_other_data():
    cfg = compose_cfg("critic=language")
    with pytest.raises(ConfigError, match="language only with text data") as e:
        validate(cfg)
    assert e.value.key == "critic.name"


def test_metrics_that_do_not_fit_text_are_refused(tmp_path):
    write_shards(tmp_path, [30])
    for metrics, key in (("[fid]", "eval.metrics"), ("[js2,wasserstein]", "eval.metrics")):
        cfg = tiny_run(tmp_path, "eval.every=1", f"eval.metrics={metrics}")
        with pytest.raises(ConfigError, match="text metrics") as e:
            Trainer(cfg, tmp_path / "run", CPU)
        assert e.value.key == key
    with pytest.raises(ConfigError, match="point metrics"):
        Trainer(compose_cfg("eval.every=1", "eval.metrics=[js1]"), tmp_path / "toy", CPU)


def test_the_paper_preset(tmp_path):
    cfg = compose_cfg("experiment=language_paper")
    t, o = cfg.trainer, cfg.optim
    assert (t.batch_size, t.n_critic, t.steps, cfg.gp["lambda"]) == (64, 10, 200000, 10)
    assert (o.critic.lr, list(o.critic.betas)) == (1e-4, [0.5, 0.9])
    assert (o.generator.lr, list(o.generator.betas)) == (1e-4, [0.5, 0.9])
    d = cfg.dataset
    assert (d.seq_len, d.max_examples, d.max_vocab, d.unit) == (32, 10_000_000, 2048, "byte")
    assert (cfg.critic.dim, cfg.critic.depth, cfg.generator.dim, cfg.generator.depth) == (
        512,
        5,
        512,
        5,
    )
    assert (cfg.eval.every, cfg.eval.num_samples) == (100, 640)
    assert list(cfg.eval.metrics) == ["js1", "js2", "js3", "js4"]
    # a sweep optimises js4 (lower is better); keep_best can keep its best checkpoint
    from wgangp.config.optimized import check_optimized_metric
    from wgangp.metrics import is_better

    assert cfg.optimized_metric == "metrics/js4"
    check_optimized_metric(cfg)
    validate(compose_cfg("experiment=language_paper", "eval.keep_best=js4"))
    assert is_better("js4", 0.5, 0.6) and not is_better("js4", 0.7, 0.6)


def test_cli_prints_one_line_for_a_missing_data_set(tmp_path):
    from tests.conftest import cli

    proc = cli("experiment=language_paper", f"dataset.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"{TRAIN_DIR}/{TRAIN_FILES[0]}" in proc.stderr + proc.stdout


def test_text_iteration_can_be_captured_in_a_cuda_graph(tmp_path):
    """speed.cuda_graph's rule (no host sync, no random draw inside the iteration)
    holds for the text step: the one-hot batches come in with the inputs."""
    from wgangp.fast.cuda_graph import CaptureCheck

    write_shards(tmp_path, [40])
    t = Trainer(tiny_run(tmp_path, "speed.nan_check=iteration"), tmp_path / "run", CPU)
    t.train_step()  # optimizer state and other first-call set-up: outside the check
    inputs = t.draw_inputs()
    state = t.rng.get_state()
    with CaptureCheck(CPU) as check:
        t.iteration(inputs)
    assert check.found == {}
    assert torch.equal(t.rng.get_state(), state)


@pytest.mark.slow
def test_the_language_model_learns_the_character_statistics(tmp_path):
    """A small language model on 600 lines of 17 words: the 2-, 3- and 4-gram
    divergences fall by a clear margin within 500 generator steps (README's numbers)."""
    import json

    write_shards(tmp_path, [300, 300])
    torch.set_num_threads(2)
    cfg = compose_cfg(
        "experiment=language_paper",
        f"dataset.root={tmp_path}",
        "dataset.seq_len=16",
        "critic.dim=32",
        "generator.dim=32",
        "critic.depth=2",
        "generator.depth=2",
        "trainer.n_critic=5",
        "trainer.steps=500",
        "eval.every=50",
        "trainer.sample_every=0",
        "trainer.progress=false",
    )
    Trainer(cfg, tmp_path / "run", CPU).fit()
    evals = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = evals[0], evals[-1]
    assert [e["step"] for e in evals] == list(range(50, 501, 50))
    # measured: js2 0.79 → 0.55, js3 0.97 → 0.77, js4 0.997 → 0.885 (js1, the symbol
    # frequencies, is learnt first: 0.19 at step 50, 0.17 at 500)
    assert last["js2"] < 0.8 * first["js2"]
    assert last["js3"] < 0.9 * first["js3"]
    assert last["js4"] < 0.95 * first["js4"]
    assert last["js1"] < 0.25
    for n in range(1, 5):  # the held-out floor (300 lines against the other 300)
        assert last[f"js{n}_real"] < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_text_on_cuda_batches_and_a_graphed_run_match(tmp_path):
    """On a GPU: the one-hot batches equal the CPU's, and a run replayed from a CUDA
    graph trains like the eager one (float rounding: cuDNN may pick other kernels)."""
    write_shards(tmp_path, [60])
    cpu = build_data(dataset_cfg(tmp_path, "dataset.seq_len=8"), 8, CPU, seed=1)
    gpu = build_data(dataset_cfg(tmp_path, "dataset.seq_len=8"), 8, torch.device("cuda"), 1)
    for _ in range(10):
        assert torch.equal(cpu.next_batch(), gpu.next_batch().cpu())
    runs = []
    for graph in ("false", "true"):
        cfg = tiny_run(tmp_path, "trainer.device=cuda", f"speed.cuda_graph={graph}")
        t = Trainer(cfg, tmp_path / f"run_{graph}", validate(cfg))
        for _ in range(6):
            t.train_step()
            t.step += 1
        runs.append(t)
    assert runs[1].graphed is not None and runs[1].graphed.replays > 0
    for a, b in zip(runs[0].critic.parameters(), runs[1].critic.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(runs[0].generator.parameters(), runs[1].generator.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
