"""Hidden test sets: parsed and validated by their exercise kind, cached by content hash."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from grader.grading.kinds.base import Kind

# v3: the labels are stored under a kind's name; older entries are parsed (and checked) again.
_CACHE_VERSION = "v3"


class TestSetError(ValueError):
    """The test-set file cannot be used; the message names the row and the problem."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestSet:
    """Images uint8 (N, *kind.image_shape) and the labels the kind scores against (for facial
    keypoints float32 (N, 15, 2), normalised as (k - 48) / 48)."""

    __test__ = False

    images: np.ndarray
    labels: np.ndarray
    sha256: str
    kind: str = "keypoints"

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_test_set(
    path: Path,
    *,
    kind: Kind | None = None,
    cache_dir: Path | None = None,
    display_name: str | None = None,
) -> TestSet:
    """Load a test-set file of `kind` (facial keypoints by default); with `cache_dir`, reuse
    an .npz keyed by the kind and the file's sha256.

    Errors name the file as `display_name` (an upload's own name, not the server's temp file).
    """
    from grader.grading.kinds import get_kind

    kind = kind or get_kind("keypoints")
    path = Path(path)
    if not path.is_file():
        raise TestSetError(f"{display_name or path}: no such file")
    sha = _sha256(path)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"testset-{_CACHE_VERSION}-{kind.name}-{sha}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file) as data:
                    return TestSet(data["images"], data["labels"], sha, kind.name)
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache entry is rebuilt below
    images, labels = kind.parse_test_set(path, display_name or path.name)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache_file)
    return TestSet(images, labels, sha, kind.name)
