"""Character n-gram Jensen–Shannon divergence (``js1`` … ``js4``) for text samples.

This is the sample-quality measure the official WGAN-GP language model logs
(``gan_language.py`` with ``language_helpers.NgramLanguageModel`` in
igul222/improved_wgan_training). For an order n, the empirical n-gram distribution of a
set of character sequences counts every contiguous n-gram of every sequence (a sequence
of length L gives L − n + 1 of them; n-grams never span two sequences) and divides each
count by the total. ``js_n`` is the Jensen–Shannon divergence in bits between the n-gram
distribution P of generated samples and Q of real text:

    JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M),   M = (P + Q) / 2,   KL in bits (log base 2),

i.e. the official ``0.5 · (KL(p‖m) + KL(q‖m)) / ln 2`` with natural-log KL, taking
0 · log 0 = 0. It is symmetric, 0 for identical distributions and 1 for distributions
with disjoint supports; **lower is better**. As in the official script, ``js_n`` compares
640 generated samples (10 batches of 64) with the n-gram counts of the whole training
corpus, which are computed once (:func:`reference_ngrams`) and reused at every
evaluation (:func:`text_metrics`).

JS estimated from a finite sample is biased upward: n-grams that a 640-sample set happens
to miss or over-represent add divergence even for a perfect generator, increasingly so
for larger n. The floor to compare with is the same statistic for a held-out *real*
sample of the same size; the official script printed it before training
(``validation set JSD for n=...``: its first 640 lines against the rest of the corpus).

Sequences are integer tensors ``(N, L)`` of character indices in ``[0, V)``. Each n-gram
is encoded as one int64 key, the base-V number of its characters with the first
character most significant (so V^n must fit in int64). Counting is vectorised with torch
on the CPU and done ``chunk_rows`` sequences at a time, so memory is bounded by one chunk
plus the number of *distinct* n-grams (or a dense table of V^n ≤ 2^22 counts for small
V^n), not by the corpus size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: the metric names this module computes (order n = the digit)
TEXT_METRICS = ("js1", "js2", "js3", "js4")
#: n-gram orders of :data:`TEXT_METRICS`
DEFAULT_ORDERS = (1, 2, 3, 4)
#: sequences counted at a time (×L n-gram keys in memory per chunk)
DEFAULT_CHUNK_ROWS = 262144
#: when V^n is at most this, counts accumulate in a dense V^n histogram (bincount, 32 MiB
#: at most) instead of per-chunk sorting with torch.unique: same result, ~10x faster
DENSE_MAX_KEYS = 1 << 22

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_NAME_RE = re.compile(r"js([1-9][0-9]*)")


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_key_range(n: int, vocab_size: int) -> None:
    if vocab_size**n >= 2**63:
        raise ValueError(
            f"n-gram keys overflow int64: vocab_size**n = {vocab_size}**{n} >= 2**63; "
            "use a smaller vocabulary or n-gram order"
        )


def _check_sequences(seqs: Tensor, n: int, vocab_size: int) -> None:
    if not isinstance(seqs, Tensor):
        raise ValueError(f"sequences must be a torch.Tensor, got {type(seqs).__name__}")
    if seqs.dtype not in _INT_DTYPES:
        raise ValueError(f"sequences must have an integer dtype, got {seqs.dtype}")
    if seqs.ndim != 2:
        raise ValueError(
            f"sequences must be a 2-D (N, L) tensor of character indices, "
            f"got shape {tuple(seqs.shape)}"
        )
    length = seqs.shape[1]
    if n > length:
        raise ValueError(f"n-gram order n={n} is longer than the sequences (L={length})")
    if seqs.numel():
        lo, hi = (int(v) for v in torch.aminmax(seqs))
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"sequence values must be in [0, vocab_size={vocab_size}), found {bad}"
            )


def _encode(chunk: Tensor, n: int, vocab_size: int) -> Tensor:
    """Keys ``(rows, L − n + 1)`` of the n-grams of each row of ``chunk``, on the CPU."""
    chunk = chunk.to(device="cpu", dtype=torch.int64)
    width = chunk.shape[1] - n + 1
    code = chunk[:, :width].clone()
    for j in range(1, n):
        code.mul_(vocab_size).add_(chunk[:, j : j + width])
    return code


def _merge(keys: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted distinct keys and their summed counts."""
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    summed = torch.zeros(uniq.shape[0], dtype=torch.int64).index_add_(0, inverse, counts)
    return uniq, summed


@dataclass(frozen=True, eq=False)
class NgramCounts:
    """Empirical n-gram counts of a set of sequences.

    ``keys`` (int64, 1-D, strictly increasing) are the distinct n-grams, each encoded as
    ``Σ_j c_j · V^(n-1-j)`` for characters ``c_0 … c_{n-1}`` (first character most
    significant, V = ``vocab_size``); ``counts`` (int64, same shape, all ≥ 1) are their
    numbers of occurrences. The distribution is ``P(g) = counts[g] / total``.
    """

    keys: Tensor
    counts: Tensor
    n: int
    vocab_size: int

    def __post_init__(self) -> None:
        _check_int(self.n, "n", 1)
        _check_int(self.vocab_size, "vocab_size", 1)
        _check_key_range(self.n, self.vocab_size)
        if self.keys.dtype != torch.int64 or self.counts.dtype != torch.int64:
            raise ValueError(
                f"keys and counts must be int64, got {self.keys.dtype} and {self.counts.dtype}"
            )
        if self.keys.ndim != 1 or self.keys.shape != self.counts.shape:
            raise ValueError(
                f"keys and counts must be 1-D of the same length, got shapes "
                f"{tuple(self.keys.shape)} and {tuple(self.counts.shape)}"
            )
        if self.keys.numel() > 1 and not bool((self.keys[1:] > self.keys[:-1]).all()):
            raise ValueError("keys must be sorted and distinct")

    @classmethod
    def from_sequences(
        cls,
        seqs: Tensor,
        n: int,
        vocab_size: int,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> NgramCounts:
        """Count every contiguous n-gram of each row of ``seqs``.

        ``seqs`` is an integer ``(N, L)`` tensor (any device) with values in
        ``[0, vocab_size)``; each row gives its ``L − n + 1`` n-grams, none spanning two
        rows. Rows are processed ``chunk_rows`` at a time on the CPU: each chunk's keys
        are reduced with ``torch.unique(return_counts=True)`` and merged into the running
        result (concatenate, re-unique, ``index_add_`` the counts), so memory stays
        O(chunk_rows · L + distinct n-grams). When ``vocab_size**n`` is at most
        :data:`DENSE_MAX_KEYS` the chunks are instead accumulated with ``torch.bincount``
        into a dense histogram of that size (same result, faster).

        Raises :class:`ValueError` for a non-integer or non-2-D tensor, ``n`` outside
        ``[1, L]``, values outside ``[0, vocab_size)``, or ``vocab_size**n >= 2**63``.
        """
        n = _check_int(n, "n", 1)
        vocab_size = _check_int(vocab_size, "vocab_size", 1)
        chunk_rows = _check_int(chunk_rows, "chunk_rows", 1)
        _check_key_range(n, vocab_size)
        _check_sequences(seqs, n, vocab_size)
        n_keys = vocab_size**n
        dense = torch.zeros(n_keys, dtype=torch.int64) if n_keys <= DENSE_MAX_KEYS else None
        keys = torch.zeros(0, dtype=torch.int64)
        counts = torch.zeros(0, dtype=torch.int64)
        for start in range(0, seqs.shape[0], chunk_rows):
            code = _encode(seqs[start : start + chunk_rows], n, vocab_size).view(-1)
            if dense is not None:
                dense += torch.bincount(code, minlength=n_keys)
                continue
            chunk_keys, chunk_counts = torch.unique(code, sorted=True, return_counts=True)
            if keys.numel() == 0:
                keys, counts = chunk_keys, chunk_counts
            else:
                keys, counts = _merge(
                    torch.cat([keys, chunk_keys]), torch.cat([counts, chunk_counts])
                )
        if dense is not None:
            keys = dense.nonzero().view(-1)
            counts = dense[keys]
        return cls(keys=keys, counts=counts, n=n, vocab_size=vocab_size)

    def without(self, part: NgramCounts) -> NgramCounts:
        """These counts less those of ``part``, the counts of some of the same sequences:
        the n-grams of the other sequences (a held-out split's complement).

        Raises :class:`ValueError` when ``part`` has another order or vocabulary, or an
        n-gram more often than these counts do (it is not a part of them).
        """
        if (part.n, part.vocab_size) != (self.n, self.vocab_size):
            raise ValueError(
                f"cannot subtract n={part.n}, V={part.vocab_size} counts from "
                f"n={self.n}, V={self.vocab_size} counts"
            )
        pos = torch.searchsorted(self.keys, part.keys).clamp_max(max(len(self) - 1, 0))
        counts = self.counts.clone()
        if len(part) and (
            not len(self)
            or not bool((self.keys[pos] == part.keys).all())
            or not bool((counts[pos] >= part.counts).all())
        ):
            raise ValueError("the counts to subtract are not a part of these counts")
        counts[pos] -= part.counts
        keep = counts > 0
        return NgramCounts(self.keys[keep], counts[keep], self.n, self.vocab_size)

    @property
    def total(self) -> int:
        """Number of n-grams counted (the sum of ``counts``)."""
        return int(self.counts.sum())

    def __len__(self) -> int:
        """Number of distinct n-grams."""
        return int(self.keys.shape[0])

    def unique_ngrams(self) -> Tensor:
        """The distinct n-grams decoded from ``keys``: an int64 ``(len(self), n)`` tensor."""
        out = torch.empty(len(self), self.n, dtype=torch.int64)
        rest = self.keys.clone()
        for j in range(self.n - 1, -1, -1):
            out[:, j] = rest % self.vocab_size
            rest = rest // self.vocab_size
        return out


def js_divergence(p: NgramCounts, q: NgramCounts) -> float:
    """Jensen–Shannon divergence in bits between two n-gram distributions.

    With ``P = p.counts / p.total``, ``Q = q.counts / q.total`` over the union of their
    n-grams and ``M = (P + Q) / 2``::

        JS = ½ Σ_g P(g) log2(P(g) / M(g)) + ½ Σ_g Q(g) log2(Q(g) / M(g)),

    terms with P(g) = 0 (resp. Q(g) = 0) being 0. Equal to the official
    ``0.5 · (KL(p‖m) + KL(q‖m)) / ln 2``; symmetric, in [0, 1], exactly 0 for proportional
    counts and 1 for disjoint n-gram sets. Computed in float64, the ratios ``P/M`` from
    integer cross-products of counts and totals.

    Raises :class:`ValueError` when ``n`` or ``vocab_size`` differ, or either side has
    no n-grams.
    """
    if p.n != q.n or p.vocab_size != q.vocab_size:
        raise ValueError(
            f"cannot compare n-gram counts of n={p.n}, vocab_size={p.vocab_size} "
            f"with n={q.n}, vocab_size={q.vocab_size}"
        )
    n_p, n_q = p.total, q.total
    if n_p == 0 or n_q == 0:
        raise ValueError(f"JS divergence of an empty n-gram distribution (totals {n_p}, {n_q})")
    union, inverse = torch.unique(torch.cat([p.keys, q.keys]), sorted=True, return_inverse=True)
    cp = torch.zeros(union.shape[0], dtype=torch.int64)
    cq = torch.zeros(union.shape[0], dtype=torch.int64)
    cp[inverse[: len(p)]] = p.counts
    cq[inverse[len(p) :]] = q.counts
    # P/M = 2a/(a+b) and Q/M = 2b/(a+b) with a = cp·n_q, b = cq·n_p, cross-multiplied in
    # int64 while that cannot overflow: the ratio is then exactly 1 where P = Q and
    # exactly 2 where the other side is 0
    if n_p * n_q < 2**62:
        a = (cp * n_q).to(torch.float64)
        b = (cq * n_p).to(torch.float64)
    else:
        a = cp.to(torch.float64) * n_q
        b = cq.to(torch.float64) * n_p
    s = a + b
    in_p, in_q = cp > 0, cq > 0
    kl_pm = float((cp[in_p].to(torch.float64) * torch.log2(2 * a[in_p] / s[in_p])).sum()) / n_p
    kl_qm = float((cq[in_q].to(torch.float64) * torch.log2(2 * b[in_q] / s[in_q])).sum()) / n_q
    return min(max(0.5 * (kl_pm + kl_qm), 0.0), 1.0)


def ngram_js(fake: Tensor, real: NgramCounts | Tensor, n: int, vocab_size: int) -> float:
    """``js_n``: JS divergence (bits) between the n-gram distributions of ``fake`` and ``real``.

    ``fake`` is an integer ``(N, L)`` tensor of character indices; ``real`` is either
    such a tensor or precomputed :class:`NgramCounts` (which must have this ``n`` and
    ``vocab_size``, else :class:`ValueError`).
    """
    if isinstance(real, NgramCounts):
        if real.n != n or real.vocab_size != vocab_size:
            raise ValueError(
                f"real n-gram counts have n={real.n}, vocab_size={real.vocab_size}; "
                f"expected n={n}, vocab_size={vocab_size}"
            )
        real_counts = real
    else:
        real_counts = NgramCounts.from_sequences(real, n, vocab_size)
    return js_divergence(NgramCounts.from_sequences(fake, n, vocab_size), real_counts)


def reference_ngrams(
    real: Tensor,
    vocab_size: int,
    orders: Iterable[int] = DEFAULT_ORDERS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[int, NgramCounts]:
    """N-gram counts of the real corpus ``real`` (``(N, L)`` indices), one per order.

    Computed once (the official script counts the whole training corpus) and passed to
    :func:`text_metrics` at every evaluation.
    """
    orders = list(orders)
    if not orders:
        raise ValueError("orders is empty")
    return {
        _check_int(n, "n-gram order", 1): NgramCounts.from_sequences(
            real, n, vocab_size, chunk_rows
        )
        for n in dict.fromkeys(orders)
    }


def metric_order(name: str) -> int:
    """The n-gram order of a metric name ``"jsN"`` (N ≥ 1); :class:`ValueError` otherwise."""
    match = _NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"unknown text metric {name!r}: expected 'jsN' such as 'js1'..'js4'")
    return int(match.group(1))


def text_metrics(
    fake: Tensor, reference: Mapping[int, NgramCounts], names: Sequence[str]
) -> dict[str, float]:
    """``{"jsN": JS divergence in bits}`` for each requested name, lower is better.

    ``fake`` is an integer ``(N, L)`` tensor of generated character indices (640 samples
    in the official script); ``reference`` maps each order N to the real corpus' counts
    (:func:`reference_ngrams`), whose ``vocab_size`` is used for ``fake`` too. A name
    not of the form ``"jsN"``, or an order missing from ``reference``, raises
    :class:`ValueError` before anything is computed.
    """
    if isinstance(names, str):
        names = [names]
    orders: dict[str, int] = {}
    for name in names:
        order = metric_order(name)
        if order not in reference:
            raise ValueError(
                f"text metric {name!r} needs the real corpus' {order}-gram counts; "
                f"reference has orders {sorted(reference)}"
            )
        orders[name] = order
    return {
        name: ngram_js(fake, reference[order], order, reference[order].vocab_size)
        for name, order in orders.items()
    }


__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DENSE_MAX_KEYS",
    "DEFAULT_ORDERS",
    "TEXT_METRICS",
    "NgramCounts",
    "js_divergence",
    "metric_order",
    "ngram_js",
    "reference_ngrams",
    "text_metrics",
]
