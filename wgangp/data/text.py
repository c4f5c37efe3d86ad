"""Character sequences: ``billion_word``, the official language model's data.

``gan_language.py`` (Gulrajani et al. 2017, §5 "modeling discrete data with a continuous
generator") trains on the One Billion Word benchmark. Its loader, reproduced here:

* the training shards ``training-monolingual.tokenized.shuffled/news.en-000NN-of-00100``
  for NN = 01 … 99 are read in order, one sample per line (the newline dropped), until
  ``dataset.max_examples`` lines (10 000 000) are loaded;
* each line is cut to ``dataset.seq_len`` symbols (32) and padded to it with the
  backtick ```;
* the vocabulary is ``unk`` (index 0) followed by the ``dataset.max_vocab − 1`` most
  frequent symbols of the padded lines (2048 in all); rarer ones become ``unk``. Ties
  are broken by the symbol's code (the official order among ties was that of a shuffle).

The official script ran under Python 2, where iterating over a line yields its *bytes*:
``dataset.unit=byte`` (the default) does the same, so a multi-byte UTF-8 character is
several symbols, and the vocabulary has at most 256 symbols besides ``unk``.
``dataset.unit=char`` reads UTF-8 characters instead (what a Python 3 port does).

A sample is the one-hot ``(V, seq_len)`` float tensor of its symbols (channels first,
for the 1-D convolutions of :mod:`wgangp.models.language`); the set is held as symbol
indices on the device and one-hot encoded per batch. Samples decode to text with
:meth:`Vocabulary.decode` (``unk`` shows as U+FFFD).

``dataset.root`` is the folder that holds ``1-billion-word-language-modeling-benchmark-
r13output/`` (or that folder itself, the official ``DATA_DIR``).
``dataset.download=true`` fetches and unpacks the benchmark's archive (1.7 GB) there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgangp.data.base import DataSource, TensorSource
from wgangp.data.registry import register_dataset
from wgangp.errors import ConfigError, DataError
from wgangp.io.paths import expand_path

log = logging.getLogger(__name__)

BILLION_WORD_DIR = "1-billion-word-language-modeling-benchmark-r13output"
BILLION_WORD_URL = (
    "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz"
)
TRAIN_DIR = "training-monolingual.tokenized.shuffled"
#: the training shards the official loader reads, in order (shard 00100 is not read)
TRAIN_FILES = tuple(f"news.en-{i:05d}-of-00100" for i in range(1, 100))
PAD = "`"
UNK = "unk"
UNITS = ("byte", "char")
#: text data sets (sequences of symbols, networks of wgangp.models.language)
TEXT_DATASETS = ("billion_word",)


@dataclass(frozen=True)
class Vocabulary:
    """Index → symbol. ``symbols[0]`` is ``unk``; the others are single characters (for
    ``unit=byte`` each is the character whose code is the byte, i.e. latin-1)."""

    symbols: tuple[str, ...]
    unit: str = "byte"

    def __len__(self) -> int:
        return len(self.symbols)

    def decode(self, indices: Tensor | np.ndarray | list[int]) -> str:
        """One sequence of indices as text: bytes decoded as UTF-8 (undecodable ones and
        ``unk`` become U+FFFD)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices)
        if self.unit == "char":
            return "".join("\ufffd" if i == 0 else self.symbols[i] for i in idx.tolist())
        out = bytearray()
        for i in idx.tolist():
            out += b"\xef\xbf\xbd" if i == 0 else self.symbols[i].encode("latin-1")
        return out.decode("utf-8", errors="replace")

    def decode_batch(self, onehot_or_indices: Tensor) -> list[str]:
        """Texts of ``(N, V, L)`` one-hot/probabilities (argmax over V) or ``(N, L)``
        indices."""
        x = onehot_or_indices
        if x.dim() == 3:
            x = x.argmax(dim=1)
        return [self.decode(row) for row in x.cpu()]


# --------------------------------------------------------------------------- loading


def _codes(raw: bytes, unit: str) -> np.ndarray:
    """The symbols of a shard as integer codes: bytes, or Unicode code points."""
    if unit == "byte":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int32)
    text = raw.decode("utf-8", errors="replace")
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _lines(codes: np.ndarray, seq_len: int, limit: int) -> np.ndarray:
    """The first ``limit`` lines of a shard, each cut or padded (with ```) to
    ``seq_len`` codes: an ``(n, seq_len)`` array. The last line needs no newline."""
    ends = np.flatnonzero(codes == ord("\n"))
    if codes.size and codes[-1] != ord("\n"):
        ends = np.append(ends, codes.size)
    ends = ends[:limit]
    starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else ends
    lengths = ends - starts
    pos = np.arange(seq_len)
    inside = pos[None, :] < lengths[:, None]
    at = np.minimum(starts[:, None] + pos[None, :], max(codes.size - 1, 0))
    taken = codes[at] if codes.size else np.zeros(at.shape, dtype=codes.dtype)
    return np.where(inside, taken, ord(PAD)).astype(codes.dtype)


def _train_dir(root: Path) -> Path:
    """The shards' folder under ``root`` (the archive's folder, or root itself)."""
    for base in (root, root / BILLION_WORD_DIR):
        if (base / TRAIN_DIR).is_dir():
            return base / TRAIN_DIR
    return root / BILLION_WORD_DIR / TRAIN_DIR


def _download(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(BILLION_WORD_URL, download_root=str(root))
    except Exception as e:  # offline, refused, disk full: the message says which
        raise DataError(
            f"billion_word: download of {BILLION_WORD_URL} into dataset.root={str(root)!r} "
            f"failed: {type(e).__name__}: {e}. Fix: download and unpack it where there is a "
            f"network and point dataset.root= to the folder holding {BILLION_WORD_DIR}/"
        ) from None


def read_billion_word(
    root: Path, seq_len: int, max_examples: int, unit: str = "byte"
) -> tuple[np.ndarray, list[str]]:
    """The official loader's lines as codes, ``(n, seq_len)``, and the shards read."""
    shards = _train_dir(root)
    present = [name for name in TRAIN_FILES if (shards / name).is_file()]
    if not present:
        raise DataError(
            f"billion_word: data set not found: expected {BILLION_WORD_DIR}/{TRAIN_DIR}/"
            f"{TRAIN_FILES[0]} … {TRAIN_FILES[-1]} under dataset.root={str(root)!r} "
            f"({root.resolve()}). Fix: set dataset.download=true to download it (1.7 GB), "
            f"or point dataset.root= to the folder that holds {BILLION_WORD_DIR}/"
        )
    parts: list[np.ndarray] = []
    read: list[str] = []
    n = 0
    for name in TRAIN_FILES:
        if n >= max_examples:
            break
        path = shards / name
        if not path.is_file():
            later = [p for p in TRAIN_FILES[TRAIN_FILES.index(name) :] if p in present]
            if later:  # a gap: the official loader would stop with an IOError here
                raise DataError(
                    f"billion_word: {path} is missing but {later[0]} is present; the shards "
                    f"are read in order, so a copy must hold {TRAIN_FILES[0]} … up to the "
                    f"last one without gaps. Fix: restore {name}, or lower "
                    f"dataset.max_examples to what the shards before it hold"
                )
            break
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(f"billion_word: cannot read {path}: {e}") from None
        lines = _lines(_codes(raw, unit), seq_len, max_examples - n)
        parts.append(lines)
        read.append(name)
        n += lines.shape[0]
    if n == 0:
        raise DataError(
            f"billion_word: the shards under {shards} ({', '.join(read)}) hold no lines. "
            f"Fix: point dataset.root= to the folder that holds {BILLION_WORD_DIR}/"
        )
    if n < max_examples:
        log.info(
            "billion_word: %d lines in %d shard(s), fewer than dataset.max_examples=%d",
            n,
            len(read),
            max_examples,
        )
    return np.concatenate(parts), read


def build_vocabulary(codes: np.ndarray, max_vocab: int, unit: str) -> tuple[Vocabulary, Tensor]:
    """``unk`` and the ``max_vocab − 1`` most frequent codes (ties: lower code first);
    returns the vocabulary and the lines as ``int16`` indices (rare codes → 0)."""
    values, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((values, -counts))  # by count descending, then code
    kept = values[order[: max_vocab - 1]]
    lookup = np.zeros(int(values.max()) + 1, dtype=np.int16)
    lookup[kept] = np.arange(1, kept.size + 1, dtype=np.int16)
    vocab = Vocabulary((UNK, *(chr(int(c)) for c in kept)), unit)
    return vocab, torch.from_numpy(lookup[codes])


class TextSource(TensorSource):
    """Sequences held as symbol indices ``(N, L)`` on the device; batches are one-hot
    ``(B, V, L)`` float tensors (the epoch order and resume of :class:`TensorSource`)."""

    def __init__(self, indices: Tensor, vocab: Vocabulary, batch_size: int, seed: int) -> None:
        super().__init__(indices, batch_size, seed, name="billion_word")
        self.vocab = vocab
        self.sample_shape = (len(vocab), int(indices.shape[1]))
        self.label_problem = "billion_word has no class labels"

    def _one_hot(self, idx: Tensor) -> Tensor:
        # a scatter, not F.one_hot: that one checks the indices' range (a host sync on
        # CUDA) and returns (B, L, V), which would need a copy into the convs' layout
        out = torch.zeros(idx.shape[0], self.sample_shape[0], idx.shape[1], device=idx.device)
        return out.scatter_(1, idx.long().unsqueeze(1), 1.0)

    def next_batch(self) -> Tensor:
        return self._one_hot(super().next_batch())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self._one_hot(super().sample(n, generator))

    def describe(self) -> str:
        n, length = self.data.shape
        return (
            f"billion_word({n} lines × {length} {self.vocab.unit}s, vocabulary {len(self.vocab)})"
        )


def validate_text_config(cfg: Any) -> None:
    """The ``dataset.*`` keys of a text set, before anything is read."""
    unit = cfg.get("unit", "byte")
    if unit not in UNITS:
        raise ConfigError(
            "dataset.unit", unit, " | ".join(UNITS), "byte is the official (Python 2) reading"
        )
    for key, low in (("seq_len", 1), ("max_examples", 1), ("max_vocab", 2)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"dataset.{key}", value, f"an integer ≥ {low}")
    if cfg.max_vocab > 2**15:
        raise ConfigError(
            "dataset.max_vocab", cfg.max_vocab, "at most 32768", "the official value is 2048"
        )


@register_dataset("billion_word")
def build_billion_word(cfg: Any, batch_size: int, device: torch.device, seed: int) -> DataSource:
    validate_text_config(cfg)
    root = expand_path(cfg.root)
    if cfg.download and not any(
        (base / TRAIN_DIR / TRAIN_FILES[0]).is_file() for base in (root, root / BILLION_WORD_DIR)
    ):
        _download(root)
    codes, read = read_billion_word(root, int(cfg.seq_len), int(cfg.max_examples), cfg.unit)
    vocab, indices = build_vocabulary(codes, int(cfg.max_vocab), cfg.unit)
    log.info(
        "billion_word: %d lines from %s … %s, vocabulary of %d symbols (%ss)",
        indices.shape[0],
        read[0],
        read[-1],
        len(vocab),
        cfg.unit,
    )
    return TextSource(indices.to(device), vocab, batch_size, seed)


def is_text(sample_shape: tuple[int, ...]) -> bool:
    """Whether samples of this shape are sequences ``(V, L)`` (not points or images)."""
    return len(sample_shape) == 2


def write_lines(path: Path, texts: list[str]) -> Path:
    """``texts`` one per line in ``path`` (UTF-8), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    return path


def as_markdown(texts: list[str]) -> str:
    """``texts`` as a Markdown code block (TensorBoard's text tab keeps the spaces)."""
    return "\n".join("    " + t.replace("\n", " ") for t in texts)
