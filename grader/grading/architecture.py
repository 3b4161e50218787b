"""What two model files of one architecture have in common, read from the zip's directory.

Students of one course upload many files of a few architectures (the course's template, a
classmate's design, their own model retrained before the deadline), and the plan the tuner
picks depends on the architecture, not on the trained values. The digest names the
architecture: the archive's code and pickled structure (by the CRC32 the zip directory keeps
for each entry) and each tensor record's size, never a tensor's values. Nothing is
decompressed and nothing is unpickled, so the trusted worker may compute it. Importable
without torch.

A digest that two different architectures share, by accident or on purpose, costs only time:
the plan it names is checked against the file's own reference before it is used
(`grader.grading.plans.PlanHint`).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from grader.grading.archive import check_model_archive
from grader.grading.failures import GradingFailure

# Records whose content is the architecture: TorchScript's generated code and module pickles,
# a torch.export program's JSON descriptions.
_STRUCTURE_SUFFIXES = (".py", ".pkl", ".json")
# Records that change from one save to the next, or with the source's line numbers.
_IGNORED_SUFFIXES = (".debug_pkl",)
_IGNORED_NAMES = frozenset({"version", "byteorder", ".data/version", ".data/serialization_id"})


def architecture_digest(path: Path, *, max_bytes: int) -> str | None:
    """sha256 hex of the architecture of the model archive at `path`; None when the archive
    is not one the grader would load."""
    try:
        check_model_archive(path, max_bytes=max_bytes)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (GradingFailure, OSError, zipfile.BadZipFile):
        return None
    digest = hashlib.sha256()
    # The top-level folder is named after the file when it was saved: left out.
    for info in sorted(infos, key=lambda i: i.filename):
        name = info.filename.partition("/")[2]
        if not name or name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES):
            continue
        content = f"{info.CRC:08x}" if name.endswith(_STRUCTURE_SUFFIXES) else "-"
        digest.update(f"{name}\0{info.file_size}\0{content}\n".encode())
    return digest.hexdigest()
