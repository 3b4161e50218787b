"""Structural checks of a model archive before torch (or a student's code) sees it.

Two formats are taken, told apart by content, never by file name: TorchScript (`torch.jit.save`)
and torch.export programs (`torch.export.save`, ".pt2"). Both are zip archives under one
top-level folder. Runs at upload time (the service's 422) and again before grading. For the zip
itself it reads only the directory and local headers, never decompresses, so a decompression
bomb is refused in milliseconds; a .pt2's small JSON descriptions are then read and checked by
`pt2_archive`. Deliberately importable without torch.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.pt2_archive import check_pt2_contents

MAX_ENTRIES = 10_000
# Deflate cannot exceed ~1032:1; TorchScript's deflated entries (code, debug pickles) are
# text that compresses 2-10x. Anything far beyond that is a bomb, not a model.
MAX_COMPRESSION_RATIO = 200
# Tensors are stored uncompressed, so a real model unpacks to about its own size.
UNCOMPRESSED_SLACK_BYTES = 16 * 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_DATA_DESCRIPTOR_FLAG = 0x08

TORCHSCRIPT = "torchscript"
PT2 = "pt2"
FORMATS = (TORCHSCRIPT, PT2)


def _load_error(reason: str) -> GradingFailure:
    return GradingFailure(FailureKind.LOAD_ERROR, reason)


def check_model_archive(path: Path, *, max_bytes: int) -> str:
    """The archive's format (TORCHSCRIPT or PT2); raises GradingFailure(TOO_LARGE or
    LOAD_ERROR) unless `path` is a sane model archive of at most `max_bytes` bytes."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _load_error(f"cannot read the file: {exc.strerror}") from None
    if size > max_bytes:
        raise GradingFailure(
            FailureKind.TOO_LARGE, f"{size} bytes, the limit is {max_bytes} bytes"
        )
    if size == 0:
        raise _load_error("the file is empty")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            if head != _LOCAL_MAGIC:
                raise _load_error(_not_zip_reason(head))
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                prefix = _check_entries(fh, infos, size=size, max_bytes=max_bytes)
                if _is_pt2(infos, prefix):
                    check_pt2_contents(zf, prefix)
                    return PT2
                _check_torchscript_layout(infos, prefix)
                return TORCHSCRIPT
    except GradingFailure:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _load_error(f"not a valid zip archive ({exc})") from None


def _not_zip_reason(head: bytes) -> str:
    if head[:1] == b"\x80":
        return "this is a legacy torch.save pickle, not an exported model"
    return "not a zip archive, so neither a torch.export program nor a TorchScript model"


def _check_entries(
    fh: BinaryIO, infos: list[zipfile.ZipInfo], *, size: int, max_bytes: int
) -> str:
    """Checks the zip's entries; returns the one top-level folder they all live in."""
    if not infos:
        raise _load_error("the zip archive is empty")
    if len(infos) > MAX_ENTRIES:
        raise _load_error(f"{len(infos)} entries in the archive, at most {MAX_ENTRIES} allowed")
    total_uncompressed = 0
    total_compressed = 0
    prefixes = set()
    for info in infos:
        name = info.filename
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise _load_error(f"unsafe entry name {name!r}")
        prefixes.add(name.split("/", 1)[0])
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _load_error(f"entry {name!r} uses an unsupported compression method")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise _load_error(f"entry {name!r} declares inconsistent sizes")
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 4096:
            raise _load_error(f"entry {name!r} has an implausible compression ratio (zip bomb?)")
        total_uncompressed += info.file_size
        total_compressed += info.compress_size
    cap = 2 * max_bytes + UNCOMPRESSED_SLACK_BYTES
    if total_uncompressed > cap:
        raise _load_error(
            f"the archive unpacks to {total_uncompressed} bytes, more than {cap} (zip bomb?)"
        )
    if total_compressed > size:
        raise _load_error("the archive declares more data than the file holds")
    _check_local_headers(fh, infos, size=size)
    if len(prefixes) != 1:
        raise _load_error("a model archive has exactly one top-level folder")
    return prefixes.pop()


def _check_local_headers(fh: BinaryIO, infos: list[zipfile.ZipInfo], *, size: int) -> None:
    """Entries must not overlap and their local headers must agree with the directory:
    overlapping entries are how a small zip expands to terabytes."""
    previous_end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < previous_end:
            raise _load_error(f"entry {info.filename!r} overlaps another entry (zip bomb?)")
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise _load_error(f"entry {info.filename!r} is truncated")
        (magic, _ver, flags, method, _t, _d, _crc, csize, usize, name_len, extra_len) = (
            _LOCAL_HEADER.unpack(raw)
        )
        if magic != _LOCAL_MAGIC or method != info.compress_type:
            raise _load_error(f"entry {info.filename!r} has a corrupt local header")
        data_end = (
            info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        )
        if flags & _DATA_DESCRIPTOR_FLAG:
            # torch's writer puts the sizes after the data, in a data descriptor.
            fh.seek(data_end)
            declared, descriptor_len = _read_descriptor(
                fh.read(24), (info.compress_size, info.file_size)
            )
        else:
            declared, descriptor_len = (csize, usize), 0
        if declared != (info.compress_size, info.file_size) and declared != (
            0xFFFFFFFF, 0xFFFFFFFF,
        ):
            raise _load_error(f"entry {info.filename!r} declares inconsistent sizes")
        previous_end = data_end + descriptor_len
        if previous_end > size:
            raise _load_error(f"entry {info.filename!r} runs past the end of the file")


def _read_descriptor(raw: bytes, expected: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """(compressed, uncompressed) sizes from a data descriptor, and the descriptor's length.
    The descriptor's sizes are 4 bytes each, or 8 in a zip64 archive."""
    offset = 4 if raw[:4] == b"PK\x07\x08" else 0
    if len(raw) < offset + 12:
        raise _load_error("an entry's data descriptor is truncated")
    short = struct.unpack_from("<II", raw, offset + 4)
    if short == expected or len(raw) < offset + 20:
        return short, offset + 12
    return struct.unpack_from("<QQ", raw, offset + 4), offset + 20


def _is_pt2(infos: list[zipfile.ZipInfo], prefix: str) -> bool:
    """torch.export.save writes `archive_format` ("pt2") and `models/<name>.json`."""
    names = {info.filename for info in infos}
    return f"{prefix}/archive_format" in names or any(
        n.startswith(f"{prefix}/models/") for n in names
    )


def _check_torchscript_layout(infos: list[zipfile.ZipInfo], prefix: str) -> None:
    names = {info.filename for info in infos}
    missing = [f"{prefix}/data.pkl"] if f"{prefix}/data.pkl" not in names else []
    # torch's writer puts the format version at `version` or (2.x, some exports) at
    # `.data/version`; its reader takes either.
    if not names & {f"{prefix}/version", f"{prefix}/.data/version"}:
        missing.append(f"{prefix}/version")
    if missing:
        raise _load_error(f"missing {', '.join(missing)}: not a TorchScript archive")
    has_code = any(n.startswith(f"{prefix}/code/") for n in names)
    if not has_code and f"{prefix}/constants.pkl" not in names:
        raise _load_error(
            "this is a torch.save archive (a pickle or a state_dict, no program inside); "
            "export with torch.export.save(torch.export.export(model.eval(), ...), 'model.pt2') "
            "or torch.jit.script(model).save('model.pt')"
        )


def detect_format(path: Path) -> str:
    """TORCHSCRIPT or PT2, from the zip's directory alone (no checks: `check_model_archive`
    is the gate; this only tells a loader which one to use)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return TORCHSCRIPT  # whatever it is, the TorchScript loader names the problem
    prefix = infos[0].filename.split("/", 1)[0] if infos else ""
    return PT2 if _is_pt2(infos, prefix) else TORCHSCRIPT
