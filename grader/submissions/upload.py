"""Receive an uploaded file: stream the multipart body to a temp file with a size cap and a
running sha256 (fsynced once complete), then move it into content-addressed storage before any
row that names it commits. Used for models (REST API and web form) and for test sets."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from grader.errors import BadRequest, Invalid, PayloadTooLarge
from grader.exercises.service import has_unsafe_chars

# Multipart framing around the file (boundaries, part headers): generous but bounded.
MULTIPART_OVERHEAD = 64 * 1024
FIELD_NAME = "file"
FILENAME_MAX = 255


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    sha256: str
    size: int
    filename: str


def too_large(max_bytes: int, *, what: str = "The model file") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is larger than this exercise allows ({max_bytes} bytes at most)."
    )


def check_content_length(request: Request, *, max_bytes: int, what: str = "The model file") -> None:
    """Refuse an oversized upload from its headers alone, before reading any of the body."""
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > max_bytes + MULTIPART_OVERHEAD
    ):
        raise too_large(max_bytes, what=what)


def check_filename(raw: bytes) -> str:
    """The client's file name, kept for display: its last path component, at most 255
    characters. Control characters (NUL included) and bidi overrides, which would make the
    name display as something it is not, are refused."""
    name = os.path.basename(raw.decode("utf-8", "replace").replace("\\", "/"))
    if has_unsafe_chars(name):
        raise Invalid(
            "The file name contains control or text-direction characters; rename the file "
            "and upload it again."
        )
    return name[:FILENAME_MAX]


class _FilePart:
    """python-multipart callbacks writing the `file` field to disk as it arrives."""

    def __init__(self, out: Any, *, max_bytes: int, what: str) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.what = what
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
                # Checked here, from the part's headers: a bad name is refused before its data.
                self.filename = check_filename(options.get(b"filename", b""))
        self._header_field = b""
        self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes, what=self.what)
        self.digest.update(chunk)
        self.out.write(chunk)

    def _part_end(self) -> None:
        self._in_file = False


async def receive_file(
    request: Request, *, max_bytes: int, tmp_dir: Path, what: str = "The model file"
) -> ReceivedFile:
    """Stream the multipart field `file` to a fsynced temp file in `tmp_dir`.

    400 for a body that is not well-formed multipart, 413 past `max_bytes`, 422 for a missing
    or empty field or a file name with control characters. Nothing is left behind on error.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Invalid("Send the file as multipart/form-data with a field named 'file'.")
    check_content_length(request, max_bytes=max_bytes, what=what)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, max_bytes=max_bytes, what=what)
            body_limit = max_bytes + MULTIPART_OVERHEAD
            received = 0
            try:
                parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > body_limit:
                        raise too_large(max_bytes, what=what)
                    parser.write(chunk)
                parser.finalize()
            except FormParserError as exc:
                raise BadRequest(f"Malformed multipart body: {exc}") from None
            out.flush()
            # Durable before anything names it; done here, outside any database transaction.
            os.fsync(out.fileno())
        if not part.found:
            raise Invalid("The upload has no field named 'file'.")
        if part.size == 0:
            raise Invalid("The uploaded file is empty.")
        return ReceivedFile(tmp_path, part.digest.hexdigest(), part.size, part.filename)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


async def receive_model_upload(request: Request, *, max_bytes: int, tmp_dir: Path) -> ReceivedFile:
    return await receive_file(request, max_bytes=max_bytes, tmp_dir=tmp_dir)


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


def prepare_storage(uploads_dir: Path) -> None:
    """Make every prefix directory, durably, once per process: uploads then pay only their own
    fsyncs, inside the transaction that admits them."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    prefixes = [uploads_dir / f"{i:02x}" for i in range(256)]
    for directory in prefixes:
        directory.mkdir(exist_ok=True)
    _fsync_dir(uploads_dir)
    with _durable_lock:
        _durable_dirs.update(prefixes)


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
    The temp file's bytes were fsynced when it was received, so this is a rename and an fsync
    of the prefix directory: cheap enough to run inside the transaction that admits the upload.
    Content already stored: only the directory entry may still be in flight (a concurrent
    identical upload): fsync the directory, drop the temp file.
    """
    target = model_storage_path(uploads_dir, received.sha256)
    _ensure_durable_dir(target.parent, parent=uploads_dir)
    if target.exists():
        received.path.unlink(missing_ok=True)
    else:
        os.chmod(received.path, 0o644)
        os.replace(received.path, target)
    _fsync_dir(target.parent)
    return target
