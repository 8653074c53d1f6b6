"""What an upload really is, read from its bytes: format, pixel size and frame count.

Only headers and container structure are parsed, never pixel data, so a decompression
bomb (a tiny file declaring a huge canvas) is refused before any decoder allocates for
it. The declared content type is never trusted: :func:`check_declared` compares it with
what :func:`sniff` found.

Status mapping of :class:`ImageRejected` (the upload service answers with it):

===== ========================== ==================================================
 413   ``ImageTooLarge``           more bytes than ``PINSTER_MAX_BYTES``
 415   ``UnsupportedImageType``    not JPEG, PNG, WebP, GIF (or HEIC/AVIF with codec)
 415   ``ContentTypeMismatch``     the declared type disagrees with the bytes
 422   ``TruncatedImage``          the file ends before its format says it should
 422   ``CorruptImage``            a header is malformed or declares zero pixels
 422   ``TooManyPixels``           width x height above ``PINSTER_MAX_PIXELS``
 422   ``TooManyFrames``           animation frames above ``PINSTER_MAX_FRAMES``
===== ========================== ==================================================
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass

from pinster_images.config import Environ, env_int
from pinster_images.errors import PermanentError

JPEG, PNG, GIF, WEBP = "image/jpeg", "image/png", "image/gif", "image/webp"
HEIC, AVIF = "image/heic", "image/avif"

#: Declared types that name the same format as a sniffed one.
ALIASES: dict[str, str] = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/jpe": JPEG,
    "image/x-png": PNG,
    "image/apng": PNG,
    "image/heif": HEIC,
    "image/heic-sequence": HEIC,
    "image/heif-sequence": HEIC,
    "image/avif-sequence": AVIF,
}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_frames: int = 1000

    @classmethod
    def from_env(cls, env: Environ) -> ImageLimits:
        return cls(
            max_bytes=env_int(env, "PINSTER_MAX_BYTES", cls.max_bytes, minimum=1),
            max_pixels=env_int(env, "PINSTER_MAX_PIXELS", cls.max_pixels, minimum=1),
            max_frames=env_int(env, "PINSTER_MAX_FRAMES", cls.max_frames, minimum=1),
        )


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    frames: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class ImageRejected(PermanentError):
    """The bytes are not an image we accept; ``status`` is the HTTP answer for it."""

    reason = "ImageRejected"

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.status = status


def too_large(size: int | None, limits: ImageLimits) -> ImageRejected:
    seen = f"{size} bytes" if size is not None else "the body"
    return ImageRejected(
        413,
        "ImageTooLarge",
        f"image too large: {seen} exceeds the byte limit PINSTER_MAX_BYTES={limits.max_bytes}",
    )


def _truncated(fmt: str) -> ImageRejected:
    return ImageRejected(422, "TruncatedImage", f"{fmt} image is truncated (incomplete file)")


def _corrupt(fmt: str, why: str) -> ImageRejected:
    return ImageRejected(422, "CorruptImage", f"{fmt} image is corrupt: {why}")


class _Reader:
    """Bounds-checked big/little-endian reads; running off the end means truncation."""

    def __init__(self, data: bytes | memoryview, fmt: str) -> None:
        self.data = data
        self.fmt = fmt

    def unpack(self, spec: str, offset: int) -> tuple[int, ...]:
        size = struct.calcsize(spec)
        if offset < 0 or offset + size > len(self.data):
            raise _truncated(self.fmt)
        return struct.unpack_from(spec, self.data, offset)

    def one(self, spec: str, offset: int) -> int:
        return self.unpack(spec, offset)[0]

    def take(self, offset: int, size: int) -> bytes:
        if offset + size > len(self.data):
            raise _truncated(self.fmt)
        return bytes(self.data[offset : offset + size])


# --- JPEG ------------------------------------------------------------------------------

# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg(data: bytes | memoryview, limits: ImageLimits) -> tuple[int, int, int]:
    r = _Reader(data, "JPEG")
    offset = 2
    while True:
        if r.one(">B", offset) != 0xFF:
            raise _corrupt("JPEG", f"expected a marker at byte {offset}")
        while r.one(">B", offset) == 0xFF:  # fill bytes
            offset += 1
        marker = r.one(">B", offset)
        offset += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            raise _corrupt("JPEG", "no frame header (SOF) before the image data")
        length = r.one(">H", offset)
        if length < 2:
            raise _corrupt("JPEG", f"segment length {length} at byte {offset}")
        if marker in _SOF:
            height, width = r.unpack(">HH", offset + 3)
            if width == 0 or height == 0:
                raise _corrupt("JPEG", f"frame header declares {width}x{height}")
            _check_pixels("JPEG", width, height, limits)  # a bomb is named as such
            # Some encoders pad after EOI; anything else after it is not a JPEG we trust.
            if not bytes(data[-64:]).rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
                raise _truncated("JPEG")
            return width, height, 1
        offset += length


# --- PNG -------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(data: bytes | memoryview, limits: ImageLimits) -> tuple[int, int, int]:
    r = _Reader(data, "PNG")
    if r.take(12, 4) != b"IHDR":
        raise _corrupt("PNG", "first chunk is not IHDR")
    width, height = r.unpack(">II", 16)
    if width == 0 or height == 0:
        raise _corrupt("PNG", f"IHDR declares {width}x{height}")
    _check_pixels("PNG", width, height, limits)  # before walking a bomb's chunks
    frames = 1
    offset = 8
    while True:
        length = r.one(">I", offset)
        kind = r.take(offset + 4, 4)
        if kind == b"acTL":
            frames = max(1, r.one(">I", offset + 8))
        if kind == b"IEND":
            return width, height, frames
        offset += 12 + length  # length, type, data, crc
        if offset >= len(data):
            raise _truncated("PNG")


# --- GIF -------------------------------------------------------------------------------


def _gif_skip_sub_blocks(r: _Reader, offset: int) -> int:
    while True:
        size = r.one("<B", offset)
        offset += 1
        if size == 0:
            return offset
        offset += size


def _gif(data: bytes | memoryview, limits: ImageLimits) -> tuple[int, int, int]:
    r = _Reader(data, "GIF")
    width, height, packed = r.unpack("<HHB", 6)
    if width == 0 or height == 0:
        raise _corrupt("GIF", f"logical screen declares {width}x{height}")
    _check_pixels("GIF", width, height, limits)
    offset = 13
    if packed & 0x80:
        offset += 3 * (2 ** ((packed & 0x07) + 1))
    frames = 0
    while True:
        block = r.one("<B", offset)
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            offset = _gif_skip_sub_blocks(r, offset + 2)
        elif block == 0x2C:  # image descriptor
            frame_w, frame_h, frame_packed = r.unpack("<HHB", offset + 5)
            _check_pixels("GIF", frame_w, frame_h, limits)
            frames += 1
            if frames > limits.max_frames:
                raise _too_many_frames("GIF", frames, limits, at_least=True)
            offset += 10
            if frame_packed & 0x80:
                offset += 3 * (2 ** ((frame_packed & 0x07) + 1))
            offset = _gif_skip_sub_blocks(r, offset + 1)  # LZW minimum code size first
        else:
            raise _corrupt("GIF", f"unknown block 0x{block:02x} at byte {offset}")
    if frames == 0:
        raise _corrupt("GIF", "no image frames")
    return width, height, frames


# --- WebP ------------------------------------------------------------------------------


def _webp(data: bytes | memoryview) -> tuple[int, int, int]:
    r = _Reader(data, "WebP")
    riff_size = r.one("<I", 4)
    if riff_size + 8 > len(data):
        raise _truncated("WebP")
    kind = r.take(12, 4)
    if kind == b"VP8 ":
        if r.take(23, 3) != b"\x9d\x01\x2a":
            raise _corrupt("WebP", "VP8 start code missing")
        w, h = r.unpack("<HH", 26)
        width, height, frames = w & 0x3FFF, h & 0x3FFF, 1
    elif kind == b"VP8L":
        if r.one("<B", 20) != 0x2F:
            raise _corrupt("WebP", "VP8L signature missing")
        bits = r.one("<I", 21)
        width, height, frames = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1
    elif kind == b"VP8X":
        b = r.take(24, 6)
        width = int.from_bytes(b[0:3], "little") + 1
        height = int.from_bytes(b[3:6], "little") + 1
        frames = 0
        offset = 12
        end = riff_size + 8
        while offset + 8 <= end:
            chunk = r.take(offset, 4)
            if chunk == b"ANMF":
                frames += 1
            size = r.one("<I", offset + 4)
            offset += 8 + size + (size & 1)
        frames = max(frames, 1)
    else:
        raise _corrupt("WebP", f"unknown first chunk {kind!r}")
    if width == 0 or height == 0:
        raise _corrupt("WebP", f"header declares {width}x{height}")
    return width, height, frames


# --- HEIC / AVIF (ISO base media file format) ------------------------------------------

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_CONTAINERS = frozenset({b"meta", b"iprp", b"ipco"})


def _bmff_brand(data: bytes | memoryview) -> str | None:
    if len(data) < 16 or bytes(data[4:8]) != b"ftyp":
        return None
    size = int.from_bytes(data[0:4], "big")
    brands = {bytes(data[8:12])}
    brands |= {bytes(data[i : i + 4]) for i in range(16, min(size, len(data)) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return AVIF
    if brands & _HEIC_BRANDS:
        return HEIC
    return None


def codec_available(content_type: str) -> bool:
    """Whether this installation can decode the format (HEIC needs pillow-heif)."""
    if content_type == HEIC:
        return importlib.util.find_spec("pillow_heif") is not None
    if content_type == AVIF:
        from PIL import features

        return bool(features.check("avif"))
    return True


def accepted_types() -> tuple[str, ...]:
    """Every declared type this installation accepts: the formats it decodes and their
    aliases (lower case; declarations are compared case-insensitively)."""
    formats = {t for t in (JPEG, PNG, GIF, WEBP, HEIC, AVIF) if codec_available(t)}
    return tuple(sorted(formats | {alias for alias, t in ALIASES.items() if t in formats}))


def _bmff_ispe(r: _Reader, start: int, end: int, found: list[tuple[int, int]]) -> None:
    """Collect every ``ispe`` (image spatial extent) under meta/iprp/ipco."""
    offset = start
    while offset + 8 <= end:
        size = r.one(">I", offset)
        kind = r.take(offset + 4, 4)
        header = 8
        if size == 1:
            size = r.one(">Q", offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise _truncated(r.fmt)
        if kind == b"ispe":
            width, height = r.unpack(">II", offset + header + 4)  # after version/flags
            found.append((width, height))
        elif kind in _CONTAINERS:
            inner = offset + header + (4 if kind == b"meta" else 0)  # meta is a full box
            _bmff_ispe(r, inner, offset + size, found)
        offset += size


def _bmff(data: bytes | memoryview, fmt: str) -> tuple[int, int, int]:
    r = _Reader(data, fmt.split("/")[1].upper())
    found: list[tuple[int, int]] = []
    _bmff_ispe(r, 0, len(data), found)
    if not found:
        raise _corrupt(r.fmt, "no image size (ispe) in the header")
    # Grids and thumbnails each carry one; the largest is what a decoder must allocate.
    width, height = max(found, key=lambda wh: wh[0] * wh[1])
    if width == 0 or height == 0:
        raise _corrupt(r.fmt, f"header declares {width}x{height}")
    return width, height, 1


# --- entry points ----------------------------------------------------------------------


def _check_pixels(fmt: str, width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageRejected(
            422,
            "TooManyPixels",
            f"{fmt} image declares {width}x{height} = {width * height} pixels, above the "
            f"pixel limit PINSTER_MAX_PIXELS={limits.max_pixels}",
        )


def _too_many_frames(
    fmt: str, frames: int, limits: ImageLimits, *, at_least: bool = False
) -> ImageRejected:
    count = f"more than {limits.max_frames}" if at_least else str(frames)
    return ImageRejected(
        422,
        "TooManyFrames",
        f"{fmt} animation has {count} frames, above the frame limit "
        f"PINSTER_MAX_FRAMES={limits.max_frames}",
    )


def detect(data: bytes | memoryview) -> str | None:
    """The content type the leading bytes announce, or None (no validation here)."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return _bmff_brand(data)


def sniff(data: bytes | memoryview, limits: ImageLimits) -> ImageInfo:
    """Identify and measure an image from its headers; raise ImageRejected if refused."""
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits)
    content_type = detect(data)
    if content_type is None:
        raise ImageRejected(
            415,
            "UnsupportedImageType",
            "not a supported image: the bytes are not JPEG, PNG, WebP, GIF, HEIC or AVIF",
        )
    if not codec_available(content_type):
        raise ImageRejected(
            415,
            "UnsupportedImageType",
            f"{content_type} is not supported by this installation (no decoder installed)",
        )
    if content_type == JPEG:
        width, height, frames = _jpeg(data, limits)
    elif content_type == PNG:
        width, height, frames = _png(data, limits)
    elif content_type == GIF:
        width, height, frames = _gif(data, limits)
    elif content_type == WEBP:
        width, height, frames = _webp(data)
    else:
        width, height, frames = _bmff(data, content_type)
    fmt = content_type.split("/")[1].upper()
    _check_pixels(fmt, width, height, limits)
    if frames > limits.max_frames:
        raise _too_many_frames(fmt, frames, limits)
    return ImageInfo(content_type=content_type, width=width, height=height, frames=frames)


def normalise_type(declared: str) -> str:
    """``"Image/JPG; charset=x"`` -> ``"image/jpeg"``."""
    base = declared.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def check_declared(info: ImageInfo, declared: str) -> None:
    """Refuse (415) when the client's declared type names another format than the bytes."""
    if normalise_type(declared) != info.content_type:
        raise ImageRejected(
            415,
            "ContentTypeMismatch",
            f"declared content type {declared!r} does not match the image bytes, "
            f"which are {info.content_type}",
        )
