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


def with_comment(jpeg_bytes: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment right after SOI: other bytes (and md5), the
    same pixels. Benchmarks make their distinct uploads of one image this way."""
    comment = text.encode()
    return (
        jpeg_bytes[:2]
        + b"\xff\xfe"
        + (len(comment) + 2).to_bytes(2, "big")
        + comment
        + jpeg_bytes[2:]
    )


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


# --- realistic and awkward images for the thumbnail engine ---------------------------

#: Where the GPS tags of :func:`with_gps` point (Null Island would be too easy to miss).
GPS_LATITUDE = (52.0, 31.0, 12.34)
GPS_LONGITUDE = (13.0, 24.0, 56.78)
#: The marker colour painted into the displayed top-left corner of oriented images.
MARKER = (255, 0, 0)
#: Pillow transposes that undo each EXIF orientation (as ImageOps.exif_transpose does).
ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: ...and the transposes that produce the stored pixels from the displayed ones.
ORIENTATION_APPLY = {
    **ORIENTATION_FIX,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like RGB content: smooth colour fields plus fine grain (compresses like a
    camera JPEG, unlike pure noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(base).astype(np.int16)
    pixels += rng.integers(-12, 12, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    return save(photo(width, height, seed), "JPEG", quality=quality)


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PinsterCam"  # Make: must survive next to the orientation
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x8825] = {
        1: "N",
        2: GPS_LATITUDE,
        3: "E",
        4: GPS_LONGITUDE,
        5: b"\x00",
        6: 34.56,
    }
    return exif


def with_gps(fmt: str = "JPEG", width: int = 320, height: int = 240) -> bytes:
    """An image carrying an EXIF GPS IFD (and, for JPEG/PNG, XMP naming the place)."""
    image = photo(width, height, seed=7)
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        b'exif:GPSLatitude="52,31.2N" exif:GPSLongitude="13,24.9E"/></rdf:RDF></x:xmpmeta>'
    )
    options: dict[str, object] = {"exif": gps_exif(orientation=1)}
    if fmt in ("JPEG", "WEBP"):
        options["xmp"] = xmp
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        info.add_text("Location", "52,31.2N 13,24.9E")
        options["pnginfo"] = info
    return save(image, fmt, **options)


def oriented_jpeg(orientation: int, width: int = 300, height: int = 200) -> bytes:
    """A JPEG that *displays* as ``width`` x ``height`` with a red top-left quadrant once
    its EXIF ``orientation`` is applied; its stored pixels are transposed accordingly."""
    displayed = Image.new("RGB", (width, height), (0, 0, 255))
    displayed.paste(MARKER, (0, 0, width // 2, height // 2))
    stored = displayed
    if orientation in ORIENTATION_APPLY:
        # The inverse of the fix: for the self-inverse ones it is the same transpose.
        stored = displayed.transpose(ORIENTATION_APPLY[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(stored, "JPEG", quality=95, exif=exif)


def cmyk_jpeg(width: int = 400, height: int = 300) -> bytes:
    return save(photo(width, height, seed=3).convert("CMYK"), "JPEG", quality=90)


def png16(width: int = 400, height: int = 300, *, color: bool = True) -> bytes:
    """A 16-bit PNG (RGB, or grey), hand-built since Pillow writes 16-bit grey only."""
    import numpy as np

    ramp = np.linspace(0, 65535, width, dtype=np.uint32).astype(">u2")
    channels = 3 if color else 1
    row = np.repeat(ramp[:, None], channels, axis=1).reshape(-1).tobytes()
    raw = b"".join(b"\x00" + row for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2 if color else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def palette_png(width: int = 400, height: int = 300) -> bytes:
    """A palette PNG whose left half is fully transparent (tRNS)."""
    image = Image.new("P", (width, height), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    image.paste(0, (0, 0, width // 2, height))
    return save(image, "PNG", transparency=0)


def animated_gif(width: int = 400, height: int = 300, frames: int = 3) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (width, height), colours[i % 3]) for i in range(frames)]
    return save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)


def truncated_jpeg(width: int = 640, height: int = 480) -> bytes:
    data = photo_jpeg(width, height)
    return data[: len(data) // 2]


def lying_png(width: int = 640, height: int = 480) -> bytes:
    """A PNG whose chunks and CRCs are all well formed but whose IDAT is not zlib data:
    the header lies about there being an image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    garbage = random.Random(5).randbytes(4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", garbage)
        + _png_chunk(b"IEND", b"")
    )


def linear_rgb_icc() -> bytes:
    """A hand-built ICC v2 matrix/TRC profile: sRGB primaries with a *linear* (gamma
    1.0) tone curve. A pixel of 128 tagged with it is sRGB ~188 once converted."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \x00\x00\x00\x00" + s15(x) + s15(y) + s15(z)

    text = b"Linear RGB (test)\x00"
    desc = (
        b"desc\x00\x00\x00\x00"
        + struct.pack(">I", len(text))
        + text
        + b"\x00" * 8  # no Unicode description
        + b"\x00\x00\x00"  # no ScriptCode description
        + b"\x00" * 67
    )
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0100) + b"\x00\x00"
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\x00\x00\x00\x00public domain\x00"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        padded = body + b"\x00" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += padded
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\x00" * 12  # date
        + b"acsp"
        + b"\x00" * 24  # platform, flags, manufacturer, model, attributes
        + b"\x00" * 4  # rendering intent
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\x00" * 4  # creator
        + b"\x00" * 44  # profile ID and reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def linear_tagged_jpeg(width: int = 200, height: int = 100, level: int = 128) -> bytes:
    image = Image.new("RGB", (width, height), (level, level, level))
    return save(image, "JPEG", quality=95, icc_profile=linear_rgb_icc())
