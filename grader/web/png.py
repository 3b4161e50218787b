"""Grayscale PNG encoding with zlib and struct only (no imaging library on the server)."""

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
    height, width = image.shape
    # Each scanline starts with filter type 0 (None).
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )
