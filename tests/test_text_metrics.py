"""Known-answer tests of wgangp.metrics.text: character n-gram JS divergence (js1..js4).

The reference is an independent pure-Python rendering of the official metric
(igul222/improved_wgan_training ``language_helpers.NgramLanguageModel.js_with``):
dict counting over tuples, then the per-n-gram log-likelihood loop with ``math.log``.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

import wgangp.metrics.text as text_mod
from wgangp.metrics.text import (
    TEXT_METRICS,
    NgramCounts,
    js_divergence,
    ngram_js,
    reference_ngrams,
    text_metrics,
)

# ----------------------------------------------------------------------------- reference


def py_counts(rows: list[list[int]], n: int) -> Counter:
    """Official counting: every contiguous n-gram of every row, as a tuple."""
    out: Counter = Counter()
    for row in rows:
        for i in range(len(row) - n + 1):
            out[tuple(row[i : i + n])] += 1
    return out


def py_js(p: Counter, q: Counter) -> float:
    """Official js_with: loop over each side's n-grams, log-likelihoods with -inf, / ln 2."""
    tp, tq = sum(p.values()), sum(q.values())

    def loglik(c: Counter, total: int, g: tuple) -> float:
        return math.log(c[g]) - math.log(total) if g in c else -math.inf

    def logaddexp(x: float, y: float) -> float:
        hi, lo = max(x, y), min(x, y)
        return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))

    ln2 = math.log(2.0)
    kl_p_m = 0.0
    for g in p:
        lp, lq = loglik(p, tp, g), loglik(q, tq, g)
        lm = logaddexp(lp - ln2, lq - ln2)
        kl_p_m += math.exp(lp) * (lp - lm)
    kl_q_m = 0.0
    for g in q:
        lp, lq = loglik(p, tp, g), loglik(q, tq, g)
        lm = logaddexp(lp - ln2, lq - ln2)
        kl_q_m += math.exp(lq) * (lq - lm)
    return 0.5 * (kl_p_m + kl_q_m) / ln2


def encode(gram: tuple[int, ...], vocab_size: int) -> int:
    key = 0
    for c in gram:
        key = key * vocab_size + c
    return key


def counts_dict(c: NgramCounts) -> dict[int, int]:
    return dict(zip(c.keys.tolist(), c.counts.tolist(), strict=True))


def rand_seqs(seed: int, rows: int, length: int, vocab_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # skewed so that some n-grams repeat and the supports partly overlap
    weights = torch.arange(1, vocab_size + 1, dtype=torch.float64) ** -1.2
    idx = torch.multinomial(weights, rows * length, replacement=True, generator=g)
    return idx.view(rows, length)


# ------------------------------------------------------------------- against the official


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("vocab_size", [3, 7, 50])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_matches_official_formulas(seed: int, vocab_size: int, n: int) -> None:
    fake = rand_seqs(seed, 23, 6, vocab_size)
    real = rand_seqs(1000 + seed, 41, 6, vocab_size)
    pf, pr = py_counts(fake.tolist(), n), py_counts(real.tolist(), n)
    cf = NgramCounts.from_sequences(fake, n, vocab_size)
    cr = NgramCounts.from_sequences(real, n, vocab_size)
    assert counts_dict(cf) == {encode(g, vocab_size): k for g, k in pf.items()}
    assert cf.total == sum(pf.values()) == 23 * (6 - n + 1)
    expected = py_js(pf, pr)
    assert js_divergence(cf, cr) == pytest.approx(expected, abs=1e-12)
    assert ngram_js(fake, real, n, vocab_size) == pytest.approx(expected, abs=1e-12)
    assert ngram_js(fake, cr, n, vocab_size) == pytest.approx(expected, abs=1e-12)


def test_sparse_and_dense_counting_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = rand_seqs(5, 300, 9, 11)
    dense = [NgramCounts.from_sequences(seqs, n, 11, chunk_rows=64) for n in (1, 2, 3)]
    monkeypatch.setattr(text_mod, "DENSE_MAX_KEYS", 0)
    sparse = [NgramCounts.from_sequences(seqs, n, 11, chunk_rows=64) for n in (1, 2, 3)]
    for d, s in zip(dense, sparse, strict=True):
        assert torch.equal(d.keys, s.keys) and torch.equal(d.counts, s.counts)


# --------------------------------------------------------------------- exact known values


def test_identical_is_zero() -> None:
    seqs = rand_seqs(3, 40, 8, 7)
    for n in (1, 2, 3, 4):
        c = NgramCounts.from_sequences(seqs, n, 7)
        assert js_divergence(c, c) == 0.0
    # proportional counts (the same rows twice) are the same distribution
    doubled = torch.cat([seqs, seqs])
    assert ngram_js(doubled, seqs, 3, 7) == 0.0


def test_disjoint_is_one() -> None:
    a = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 0, 0, 0]])
    b = torch.tensor([[2, 3, 2], [3, 3, 3], [2, 2, 2]])
    for n in (1, 2, 3):
        assert ngram_js(a, b, n, 4) == 1.0
        assert ngram_js(b, a, n, 4) == 1.0


def test_two_symbol_closed_form() -> None:
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P‖M) = 1 - ½ log2 3, KL(Q‖M) = 2 - log2 3, JS = 3/2 - ¾ log2 3
    p = torch.tensor([[0, 1]])
    q = torch.tensor([[0, 0]])
    assert ngram_js(p, q, 1, 2) == pytest.approx(1.5 - 0.75 * math.log2(3), abs=1e-15)
    # bigrams: P = {01: ½, 10: ½}, Q = {01: ½, 11: ½}: KL(P‖M) = KL(Q‖M) = ½, JS = ½
    assert ngram_js(torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 1]]), 2, 2) == 0.5


def test_symmetric() -> None:
    a, b = rand_seqs(7, 30, 10, 9), rand_seqs(8, 55, 10, 9)
    for n in (1, 2, 3, 4):
        ca = NgramCounts.from_sequences(a, n, 9)
        cb = NgramCounts.from_sequences(b, n, 9)
        assert js_divergence(ca, cb) == pytest.approx(js_divergence(cb, ca), abs=1e-15)
        assert 0.0 < js_divergence(ca, cb) < 1.0


# ---------------------------------------------------------------------------- counting


def test_ngrams_do_not_cross_rows() -> None:
    v = 5
    c = NgramCounts.from_sequences(torch.tensor([[0, 1], [2, 3]]), 2, v)
    assert c.keys.tolist() == [0 * v + 1, 2 * v + 3]
    assert c.counts.tolist() == [1, 1]
    assert c.total == 2 and len(c) == 2


def test_chunking_invariance(monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = rand_seqs(11, 37, 7, 6)
    for dense_max in (text_mod.DENSE_MAX_KEYS, 0):
        monkeypatch.setattr(text_mod, "DENSE_MAX_KEYS", dense_max)
        for n in (1, 2, 3, 4):
            ref = NgramCounts.from_sequences(seqs, n, 6, chunk_rows=10**6)
            for chunk_rows in (1, 3):
                c = NgramCounts.from_sequences(seqs, n, 6, chunk_rows=chunk_rows)
                assert torch.equal(c.keys, ref.keys)
                assert torch.equal(c.counts, ref.counts)
                assert c.keys.dtype == c.counts.dtype == torch.int64


def test_integer_dtypes_agree() -> None:
    seqs = rand_seqs(12, 20, 6, 40)
    ref = NgramCounts.from_sequences(seqs, 3, 40)
    for dtype in (torch.int16, torch.int32, torch.uint8):
        c = NgramCounts.from_sequences(seqs.to(dtype), 3, 40)
        assert torch.equal(c.keys, ref.keys) and torch.equal(c.counts, ref.counts)


def test_key_encoding_round_trips_at_vocab_2048() -> None:
    v, top = 2048, 2047
    seqs = torch.tensor(
        [[top, top, top, top], [0, top, 0, top], [top, 0, 0, 0], [0, 0, 0, 1]],
        dtype=torch.int16,
    )
    c = NgramCounts.from_sequences(seqs, 4, v)
    expected = sorted(encode(tuple(r), v) for r in seqs.tolist())
    assert c.keys.tolist() == expected
    assert c.keys[-1].item() == v**4 - 1
    assert sorted(map(tuple, c.unique_ngrams().tolist())) == sorted(map(tuple, seqs.tolist()))
    assert counts_dict(c) == {k: 1 for k in expected}


@pytest.mark.parametrize(("vocab_size", "n"), [(2**16, 4), (2**21, 3), (2048, 6)])
def test_key_overflow_raises(vocab_size: int, n: int) -> None:
    seqs = torch.zeros(2, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match=rf"{vocab_size}\*\*{n}"):
        NgramCounts.from_sequences(seqs, n, vocab_size)


def test_largest_fitting_key_range_is_accepted() -> None:
    # (2**21 - 1)**3 < 2**63
    v = 2**21 - 1
    c = NgramCounts.from_sequences(torch.tensor([[v - 1, v - 1, v - 1]]), 3, v)
    assert c.keys.tolist() == [v**3 - 1]


# --------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("seqs", "n", "vocab_size", "needle"),
    [
        (torch.zeros(3, 4), 1, 5, "float32"),
        (torch.zeros(3, 4, dtype=torch.bool), 1, 5, "bool"),
        (torch.zeros(12, dtype=torch.int64), 1, 5, "(12,)"),
        (torch.zeros(2, 3, 4, dtype=torch.int64), 1, 5, "(2, 3, 4)"),
        (torch.zeros(3, 4, dtype=torch.int64), 0, 5, "n must be an integer >= 1, got 0"),
        (torch.zeros(3, 4, dtype=torch.int64), 5, 5, "n=5 is longer than the sequences (L=4)"),
        (torch.tensor([[0, 1, -3]]), 1, 5, "-3"),
        (torch.tensor([[0, 1, 7]]), 1, 7, "found 7"),
        (torch.tensor([[0, 1, 2]]), 1, 0, "vocab_size must be an integer >= 1, got 0"),
        ([[0, 1, 2]], 1, 5, "list"),
    ],
)
def test_input_errors(seqs, n: int, vocab_size: int, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        NgramCounts.from_sequences(seqs, n, vocab_size)
    assert needle in str(info.value)


def test_chunk_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        NgramCounts.from_sequences(torch.zeros(2, 3, dtype=torch.int64), 1, 4, chunk_rows=0)


def test_mismatched_counts_raise() -> None:
    seqs = rand_seqs(13, 5, 5, 4)
    c1, c2 = NgramCounts.from_sequences(seqs, 1, 4), NgramCounts.from_sequences(seqs, 2, 4)
    with pytest.raises(ValueError, match="n=2"):
        js_divergence(c1, c2)
    with pytest.raises(ValueError, match="vocab_size=5"):
        js_divergence(c1, NgramCounts.from_sequences(seqs, 1, 5))
    with pytest.raises(ValueError, match="n=1"):
        ngram_js(seqs, c1, 2, 4)
    empty = NgramCounts.from_sequences(torch.zeros(0, 5, dtype=torch.int64), 1, 4)
    with pytest.raises(ValueError, match="empty"):
        js_divergence(c1, empty)


# ------------------------------------------------------------------------------ metrics


def test_text_metrics_names() -> None:
    real, fake = rand_seqs(20, 200, 12, 10), rand_seqs(21, 64, 12, 10)
    ref = reference_ngrams(real, 10)
    assert sorted(ref) == [1, 2, 3, 4]
    out = text_metrics(fake, ref, TEXT_METRICS)
    assert list(out) == list(TEXT_METRICS)
    for n in (1, 2, 3, 4):
        assert out[f"js{n}"] == ngram_js(fake, real, n, 10)
    # lower-order distributions are easier to match
    assert out["js1"] < out["js2"] < out["js3"] < out["js4"]
    assert list(text_metrics(fake, ref, ["js3", "js1"])) == ["js3", "js1"]
    with pytest.raises(ValueError, match="js5"):
        text_metrics(fake, ref, ["js1", "js5"])
    with pytest.raises(ValueError, match="fid"):
        text_metrics(fake, ref, ["fid"])
    # js5 works once the reference has 5-grams
    ref5 = reference_ngrams(real, 10, orders=(5,))
    assert set(text_metrics(fake, ref5, ["js5"])) == {"js5"}
    with pytest.raises(ValueError, match="js2"):
        text_metrics(fake, ref5, ["js2"])


def test_without_leaves_the_other_sequences_counts():
    g = torch.Generator().manual_seed(5)
    a = torch.randint(0, 7, (30, 9), generator=g)
    b = torch.randint(0, 7, (12, 9), generator=g)
    for n in (1, 2, 3):
        both = NgramCounts.from_sequences(torch.cat([a, b]), n, 7)
        rest = both.without(NgramCounts.from_sequences(b, n, 7))
        want = NgramCounts.from_sequences(a, n, 7)
        assert torch.equal(rest.keys, want.keys) and torch.equal(rest.counts, want.counts)
    whole = NgramCounts.from_sequences(a, 2, 7)
    assert len(whole.without(whole)) == 0
    with pytest.raises(ValueError, match="not a part"):
        NgramCounts.from_sequences(a[:5], 2, 7).without(whole)
    with pytest.raises(ValueError, match="cannot subtract"):
        whole.without(NgramCounts.from_sequences(a, 3, 7))
