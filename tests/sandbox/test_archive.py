"""The archive check refuses what is not a TorchScript zip, in milliseconds, without torch."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading.archive import check_model_archive
from grader.grading.failures import FailureKind, GradingFailure
from tests.sandbox.hostile_models import Honest, save_scripted

MAX = 20 * 1024 * 1024


def _kind(path: Path, max_bytes: int = MAX) -> tuple[FailureKind, str]:
    with pytest.raises(GradingFailure) as info:
        check_model_archive(path, max_bytes=max_bytes)
    return info.value.kind, info.value.detail


def test_a_scripted_model_passes(tmp_path: Path) -> None:
    check_model_archive(save_scripted(Honest(), tmp_path / "m.pt"), max_bytes=MAX)


def test_over_the_size_limit_is_too_large(tmp_path: Path) -> None:
    path = save_scripted(Honest(), tmp_path / "m.pt")
    assert _kind(path, max_bytes=path.stat().st_size - 1)[0] == FailureKind.TOO_LARGE


def test_plain_pickles_random_bytes_and_empty_files(tmp_path: Path) -> None:
    torch.save(Honest(), tmp_path / "pickle.pt")
    torch.save(Honest().state_dict(), tmp_path / "state.pt")
    torch.save(Honest(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("pickle", "state", "legacy", "random", "empty"):
        kind, detail = _kind(tmp_path / f"{name}.pt")
        assert kind == FailureKind.LOAD_ERROR, name
        assert detail


def _bomb(path: Path, size: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data.pkl", b"\0" * size)
        zf.writestr("m/constants.pkl", b"x")
        zf.writestr("m/version", b"3")


def test_a_zip_bomb_is_refused_in_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    _bomb(path, 300 * 1024 * 1024)
    assert path.stat().st_size < 1024 * 1024
    started = time.perf_counter()
    kind, detail = _kind(path)
    assert time.perf_counter() - started < 0.05
    assert kind == FailureKind.LOAD_ERROR and "bomb" in detail


def test_lying_declared_sizes_are_refused(tmp_path: Path) -> None:
    path = save_scripted(Honest(), tmp_path / "m.pt")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        first = min(zf.infolist(), key=lambda i: i.header_offset)
    # torch writes sizes in a data descriptor after each entry's data; make the first one lie.
    name_len, extra_len = struct.unpack_from("<HH", raw, first.header_offset + 26)
    descriptor = first.header_offset + 30 + name_len + extra_len + first.compress_size
    assert raw[descriptor : descriptor + 4] == b"PK\x07\x08"
    struct.pack_into("<I", raw, descriptor + 12, first.file_size + 1000)
    path.write_bytes(bytes(raw))
    kind, detail = _kind(path)
    assert kind == FailureKind.LOAD_ERROR and "inconsistent" in detail


def test_missing_torchscript_entries(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/code/__torch__/x.py", "")
    kind, detail = _kind(path)
    assert kind == FailureKind.LOAD_ERROR and "data.pkl" in detail


def test_importable_without_torch(tmp_path: Path) -> None:
    path = save_scripted(Honest(), tmp_path / "m.pt")
    code = (
        "import sys; from pathlib import Path\n"
        "from grader.grading.archive import check_model_archive\n"
        f"check_model_archive(Path({str(path)!r}), max_bytes={MAX})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_version_record_may_sit_under_dot_data(tmp_path: Path) -> None:
    """torch 2.x's writer puts the format version at `.data/version` in some exports (seen on
    a zoo model); torch loads such a file, so the checks on both sides must take it."""
    original = save_scripted(Honest(), tmp_path / "honest.pt")
    moved = tmp_path / "dot_data.pt"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(moved, "w") as dst:
        for info in src.infolist():
            name = info.filename
            if name.endswith("/version"):
                name = name[: -len("version")] + ".data/version"
            dst.writestr(name, src.read(info), compress_type=zipfile.ZIP_STORED)
    assert not any(n.endswith("/version") and "/.data/" not in n
                   for n in zipfile.ZipFile(moved).namelist())
    torch.jit.load(str(moved))  # torch itself takes it

    check_model_archive(moved, max_bytes=10**8)
    from grader_cli.archive import check_model_file

    assert check_model_file(moved) == moved.stat().st_size
