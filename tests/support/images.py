"""Small real images made with Pillow, and hand-built hostile ones, for tests and bench."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image


def encode(fmt: str, width: int = 64, height: int = 48, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(width: int = 64, height: int = 48, **options: object) -> bytes:
    return encode("JPEG", width, height, **options)


def png(width: int = 64, height: int = 48) -> bytes:
    return encode("PNG", width, height)


def noisy_jpeg(target_bytes: int, seed: int = 0) -> bytes:
    """A JPEG of roughly ``target_bytes`` (noise does not compress), for benchmarks."""
    rng = random.Random(seed)
    side = 64
    while True:
        pixels = rng.randbytes(side * side * 3)
        buffer = io.BytesIO()
        Image.frombytes("RGB", (side, side), pixels).save(buffer, "JPEG", quality=90)
        if buffer.tell() >= target_bytes:
            return buffer.getvalue()
        side = int(side * 1.25) + 1


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid, tiny PNG whose header declares a huge canvas."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small real JPEG with its frame header rewritten to declare a huge size."""
    data = bytearray(jpeg(16, 16))
    offset = 2
    while True:
        marker = data[offset + 1]
        length = struct.unpack_from(">H", data, offset + 2)[0]
        if 0xC0 <= marker <= 0xC3:
            struct.pack_into(">HH", data, offset + 5, height, width)
            return bytes(data)
        offset += 2 + length
