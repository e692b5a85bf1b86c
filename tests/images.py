"""Small real images for tests: each call gives a PNG of its own colour, so no two uploads collide."""

from __future__ import annotations

import itertools
import struct
import zlib

_colours = itertools.count(1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 2, height: int = 2, padding: int = 0) -> bytes:
    """A valid RGB PNG; ``padding`` adds a text chunk to reach a given size."""
    colour = next(_colours).to_bytes(3, "big")
    rows = b"".join(b"\x00" + colour * width for _ in range(height))
    chunks = [
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
        _chunk(b"IDAT", zlib.compress(rows)),
    ]
    if padding:
        chunks.append(_chunk(b"tEXt", b"Comment\x00" + b"x" * padding))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _chunk(b"IEND", b"")


def jpeg() -> bytes:
    """A minimal JPEG as far as its markers go (start of image, a comment, end of image)."""
    comment = f"photo {next(_colours)}".encode()
    return b"\xff\xd8\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + b"\xff\xd9"
