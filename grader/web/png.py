"""PNG encoding (grayscale or RGB) with zlib and struct only (no imaging library on the
server)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_gray_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a uint8 (H, W) array."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("expected a uint8 array of shape (H, W)")
    return _encode(image, colour_type=0)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit PNG of a uint8 (H, W) grayscale or (H, W, 3) RGB array."""
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError("expected a uint8 array of shape (H, W) or (H, W, 3)")
    return _encode(image, colour_type=0 if image.ndim == 2 else 2)


def _encode(image: np.ndarray, *, colour_type: int) -> bytes:
    height, width = image.shape[:2]
    image = np.ascontiguousarray(image)
    # Each scanline starts with filter type 0 (None).
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )
