"""Any directory of images, loaded with PIL (the ``image_folder`` data set).

Discovery: every file under ``dataset.root``, recursively (class sub-folders or not,
nested at any depth, symlinked folders followed once), whose extension is one of
:data:`IMAGE_EXTENSIONS`, case-insensitive. Hidden files and folders (``.name``) are
skipped. Paths are sorted, so the index of an image, hence the training order for a
given seed, does not depend on the file system's listing order.

Classes (class-conditional training, ``conditional.enabled``): when every image lies
inside a sub-folder of ``dataset.root``, each top-level sub-folder is a class, in
sorted order, as torchvision's ``ImageFolder`` names them (``root/cat/x.png`` and
``root/cat/deep/y.png`` are both ``cat``). An image directly in ``dataset.root`` leaves
the folder without labels; training unconditionally is unaffected.

Undecodable files, policy:

1. At start-up every file is opened *lazily* with PIL (header only, no pixel
   decoding, in a few threads): files PIL cannot identify (not an image, empty, a
   truncated header, a macOS ``._`` resource fork, ...) are dropped, with ONE warning
   giving their count and the first few paths. If none is left, :class:`DataError`.
2. A file whose header is fine but whose pixels fail to decode (truncated data) is
   found only when loaded: it is replaced by the next decodable image in index order
   (of the same class, when the folder has classes)
   (deterministic, so the batch keeps its size and a resumed run sees the same
   images), with one warning per bad file per process.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from wgangp.errors import DataError
from wgangp.io.paths import expand_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: how many bad paths a warning lists
SHOW_BAD = 5
#: how many following images a load tries before giving up on a run of bad files
MAX_FALLBACK = 32


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden entries skipped)."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / f)
    return sorted(found)


def folder_fingerprint(root: Path) -> str:
    """A hash of the folder's content as :func:`find_images` sees it: every image's path
    relative to ``root``, size and modification time, sorted. Adding, removing, replacing
    or touching an image changes it; moving the folder does not."""
    digest = hashlib.sha1()
    for path in find_images(root):
        st = path.stat()
        digest.update(
            f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def _identifiable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            return img.size[0] > 0 and img.size[1] > 0
    except Exception:  # any failure to identify the file: it is not usable
        return False


def _bad_files_message(bad: list[Path], total: int, root: Path) -> str:
    shown = ", ".join(str(p) for p in bad[:SHOW_BAD])
    more = f" and {len(bad) - SHOW_BAD} more" if len(bad) > SHOW_BAD else ""
    return f"{len(bad)} of {total} image files under {root} cannot be decoded: {shown}{more}"


def scan_images(root: Path, threads: int = 8) -> list[Path]:
    """The decodable-looking images under ``root``; see the module docstring."""
    if not root.is_dir():
        raise DataError(
            f"image_folder: dataset.root={str(root)!r} is not a directory; point "
            "dataset.root= to a folder of images (sub-folders allowed)"
        )
    paths = find_images(root)
    if not paths:
        raise DataError(
            f"image_folder: no image files under dataset.root={str(root)!r} (looked "
            f"recursively for {', '.join(IMAGE_EXTENSIONS)}); point dataset.root= to a "
            "folder of images"
        )
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ok = list(pool.map(_identifiable, paths))
    good = [p for p, k in zip(paths, ok, strict=True) if k]
    bad = [p for p, k in zip(paths, ok, strict=True) if not k]
    if not good:
        raise DataError(
            "image_folder: " + _bad_files_message(bad, len(paths), root) + "; none is usable"
        )
    if bad:
        log.warning("%s; skipping them", _bad_files_message(bad, len(paths), root))
    return good


def class_folders(root: Path, paths: list[Path]) -> tuple[list[str], list[int], list[Path]]:
    """``(classes, targets, unlabelled)``: the sorted top-level sub-folders of ``root``
    that hold images, each path's class index, and the paths directly in ``root``
    (which have none; then ``targets`` is empty)."""
    tops = [p.relative_to(root).parts for p in paths]
    unlabelled = [p for p, parts in zip(paths, tops, strict=True) if len(parts) < 2]
    if unlabelled:
        return [], [], unlabelled
    classes = sorted({parts[0] for parts in tops})
    index = {c: i for i, c in enumerate(classes)}
    return classes, [index[parts[0]] for parts in tops], []


class ImageFolderImages(Dataset):
    """The images of a folder as ``(PIL image, class)`` items, like a torchvision data
    set; ``classes``/``targets`` are the class sub-folders (see the module docstring),
    empty when an image lies directly in the root (its items then say class 0)."""

    def __init__(self, root: str | Path) -> None:
        self.root = expand_path(root)
        self.paths = scan_images(self.root)
        self.classes, self.targets, self.unlabelled = class_folders(self.root, self.paths)
        self._warned: set[Path] = set()

    def labels_problem(self) -> str | None:
        """Why this folder has no class labels (None when it has them)."""
        if self.unlabelled:
            shown = ", ".join(str(p.relative_to(self.root)) for p in self.unlabelled[:SHOW_BAD])
            return (
                f"{len(self.unlabelled)} of its {len(self.paths)} images lie directly in "
                f"dataset.root={str(self.root)!r}, not in a class sub-folder ({shown}); "
                "put each image under dataset.root/<class>/"
            )
        if len(self.classes) < 2:
            return (
                f"all its images are in one class sub-folder ({self.classes[0]!r}); "
                "class-conditional training needs at least two"
            )
        return None

    def __len__(self) -> int:
        return len(self.paths)

    def _open(self, path: Path) -> Image.Image:
        img = Image.open(path)
        try:
            img.load()
        except Exception:
            img.close()
            raise
        return img

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        n = len(self.paths)
        label = self.targets[index] if self.targets else 0
        # stand-ins come from the same class, so a batch's labels stay right
        same = (j % n for j in range(index, index + n))
        if self.targets:
            same = (j for j in same if self.targets[j] == label)
        tried = 0
        for j in same:
            path = self.paths[j]
            try:
                return self._open(path), label
            except Exception as e:  # undecodable pixels: use the next image instead
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("cannot decode %s (%s); using the next image instead", path, e)
            tried += 1
            if tried == MAX_FALLBACK:
                break
        raise DataError(
            f"image_folder: {tried} images in a row from {self.paths[index]} "
            f"on cannot be decoded under {self.root}; check the files"
        )
