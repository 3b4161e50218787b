"""Receive a model upload: stream the multipart body to a temp file with a size cap and a
running sha256, then move it into content-addressed storage, fsynced before any row commits."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from grader.errors import Invalid, PayloadTooLarge

# Multipart framing around the file (boundaries, part headers): generous but bounded.
MULTIPART_OVERHEAD = 64 * 1024
FIELD_NAME = "file"


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    sha256: str
    size: int
    filename: str


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The model file is larger than this exercise allows ({max_bytes} bytes at most)."
    )


def check_content_length(request: Request, *, max_bytes: int) -> None:
    """Refuse an oversized upload from its headers alone, before reading any of the body."""
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > max_bytes + MULTIPART_OVERHEAD
    ):
        raise too_large(max_bytes)


class _FilePart:
    """python-multipart callbacks writing the `file` field to disk as it arrives."""

    def __init__(self, out: Any, *, max_bytes: int) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.filename = ""
        self.found = False
        self._header_field = b""
        self._header_value = b""
        self._in_file = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_cb,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._in_file = False

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            if options.get(b"name") == FIELD_NAME.encode() and not self.found:
                self._in_file = True
                self.found = True
                raw = options.get(b"filename", b"")
                self.filename = os.path.basename(raw.decode("utf-8", "replace"))[:255]
        self._header_field = b""
        self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes)
        self.digest.update(chunk)
        self.out.write(chunk)

    def _part_end(self) -> None:
        self._in_file = False


async def receive_model_upload(request: Request, *, max_bytes: int, tmp_dir: Path) -> ReceivedFile:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Invalid("Send the model as multipart/form-data with a field named 'file'.")
    check_content_length(request, max_bytes=max_bytes)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, max_bytes=max_bytes)
            parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
            body_limit = max_bytes + MULTIPART_OVERHEAD
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_limit:
                    raise too_large(max_bytes)
                parser.write(chunk)
            parser.finalize()
        if not part.found:
            raise Invalid("The upload has no field named 'file'.")
        if part.size == 0:
            raise Invalid("The uploaded file is empty.")
        return ReceivedFile(tmp_path, part.digest.hexdigest(), part.size, part.filename)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def model_storage_path(uploads_dir: Path, sha256: str) -> Path:
    return uploads_dir / sha256[:2] / f"{sha256}.pt"


# Directories whose own entry (in uploads_dir) this process has made durable. A new prefix
# directory costs one extra fsync of uploads_dir, once; after that an upload fsyncs only its
# file and its prefix directory.
_durable_dirs: set[Path] = set()
_durable_lock = threading.Lock()


def _ensure_durable_dir(directory: Path, *, parent: Path) -> None:
    if directory in _durable_dirs and directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    # Fsync the parent after the mkdir, whoever made it: its entry is then on disk.
    _fsync_dir(parent)
    with _durable_lock:
        _durable_dirs.add(directory)


def store_content_addressed(received: ReceivedFile, *, uploads_dir: Path) -> Path:
    """Move the temp file to uploads/<sha[:2]>/<sha>.pt, durably, before any row names it.

    Identical uploads share one file; the rename is atomic, so a reader never sees half a file.
    New content: fsync the file, rename, fsync the prefix directory. Content already stored:
    whoever renamed it fsynced its bytes first, so only the directory entry may still be in
    flight (a concurrent identical upload): fsync the directory, drop the temp file.
    """
    target = model_storage_path(uploads_dir, received.sha256)
    _ensure_durable_dir(target.parent, parent=uploads_dir)
    if target.exists():
        received.path.unlink(missing_ok=True)
    else:
        os.chmod(received.path, 0o644)
        with received.path.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(received.path, target)
    _fsync_dir(target.parent)
    return target
