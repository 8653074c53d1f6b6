"""The engine's own PNG and WebP decoders against Pillow's: same pixels (PNG) or the same
picture within tolerance (WebP's scaled decode), and Pillow's path kept where they do
not apply."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from pinster_jobs._decode import _libwebp, load_png, load_webp
from pinster_jobs._rescale import decode_within

from pinster_images.sniff import ImageLimits, sniff
from tests.support import images


def opened(data: bytes) -> ImageFile.ImageFile:
    return Image.open(io.BytesIO(data))


def pillow(data: bytes) -> Image.Image:
    image = opened(data)
    image.load()
    return image


def psnr(ours: Image.Image, reference: Image.Image) -> float:
    a = np.asarray(ours.convert("RGB"), dtype=np.float64)
    b = np.asarray(reference.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12)))


def with_idat_chunks_of(size: int, image: Image.Image) -> bytes:
    """Pillow writes IDAT chunks of ImageFile.MAXBLOCK bytes; encoders differ."""
    saved = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = size
    try:
        return images.save(image, "PNG")
    finally:
        ImageFile.MAXBLOCK = saved


def set_ihdr_byte(data: bytes, index: int, value: int) -> bytes:
    """``data`` with IHDR field byte ``index`` (0-12) replaced and the CRC redone."""
    ihdr = bytearray(data[16:29])
    ihdr[index] = value
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return data[:16] + bytes(ihdr) + crc + data[33:]


PHOTO = images.photo(301, 203, seed=3)  # odd sides, grain: every PNG filter type occurs

PNG_CASES = {
    "rgb": images.save(PHOTO, "PNG"),
    "rgba": images.save(PHOTO.convert("RGBA"), "PNG"),
    "grey": images.save(PHOTO.convert("L"), "PNG"),
    "grey-alpha": images.save(PHOTO.convert("LA"), "PNG"),
    "bilevel": images.save(PHOTO.convert("1"), "PNG"),
    "rgb16": images.png16(301, 203, color=True),
    "grey16": images.png16(301, 203, color=False),
    "rgb-trns": images.save(PHOTO, "PNG", transparency=(10, 20, 30)),
    "icc": images.save(PHOTO, "PNG", icc_profile=images.linear_rgb_icc()),
    # Flat content: a few input bytes inflate to far more than one stored block.
    "flat-one-chunk": with_idat_chunks_of(1 << 26, Image.new("RGB", (2000, 1500))),
    "tiny-chunks": with_idat_chunks_of(100, PHOTO),
}


@pytest.mark.parametrize("data", PNG_CASES.values(), ids=PNG_CASES.keys())
def test_png_pixels_and_info_are_pillows_own(data: bytes) -> None:
    ours = load_png(opened(data), data)
    assert ours is not None
    reference = pillow(data)
    assert (ours.mode, ours.size) == (reference.mode, reference.size)
    assert ours.tobytes() == reference.tobytes()
    assert ours.info == reference.info


@pytest.mark.parametrize(
    "data",
    [
        images.palette_png(40, 30),
        set_ihdr_byte(PNG_CASES["rgb"], 12, 1),  # interlaced (Adam7)
        images.save(PHOTO, "PNG", save_all=True, append_images=[PHOTO.rotate(90)]),
        images.save(PHOTO, "JPEG"),
    ],
    ids=["palette", "interlaced", "animated", "not-png"],
)
def test_png_cases_left_to_pillow(data: bytes) -> None:
    assert load_png(opened(data), data) is None


def test_png_whose_data_ends_early_is_truncated() -> None:
    data = PNG_CASES["rgb"]
    short = images.save(PHOTO.crop((0, 0, 301, 100)), "PNG")
    # The header of the full image with the rows of a shorter one.
    lying = data[:33] + short[33:]
    with pytest.raises(OSError, match="truncated"):
        load_png(opened(lying), lying)
    with pytest.raises(OSError, match="truncated"):
        load_png(opened(data), data[: len(data) // 2])


def test_png_that_is_not_zlib_data_is_broken() -> None:
    data = images.lying_png()
    with pytest.raises(OSError, match="broken PNG data stream"):
        load_png(opened(data), data)


def test_webp_binding_is_available_with_pillows_libwebp() -> None:
    # Else every WebP would quietly take Pillow's slower path.
    assert _libwebp() is not None


@pytest.mark.parametrize("lossless", [False, True], ids=["lossy", "lossless"])
def test_webp_at_full_size_is_pillows_picture(lossless: bool) -> None:
    data = images.save(PHOTO, "WEBP", quality=90, lossless=lossless)
    ours = load_webp(opened(data), data, PHOTO.size, 1.0)
    assert ours is not None
    reference = pillow(data)
    assert (ours.mode, ours.size) == ("RGB", PHOTO.size)
    assert ours.tobytes() == reference.tobytes()


@pytest.mark.parametrize(
    ("size", "gap", "scaled"),
    [
        ((150, 101), 1.0, (150, 102)),  # factor 2.0 -> 1/2 (203 / 2 rounds up)
        ((100, 67), 1.0, (100, 68)),  # factor 3.01 -> 1/3, bicubic residual left
        ((40, 27), 3.0, (150, 102)),  # small output: the gentle gap 3, as shrink uses
        ((200, 135), 1.0, (301, 203)),  # factor 1.5: nothing to reduce on load
    ],
)
def test_webp_shrinks_on_load_by_the_reduce_factor(
    size: tuple[int, int], gap: float, scaled: tuple[int, int]
) -> None:
    data = images.save(PHOTO, "WEBP", quality=95)
    ours = load_webp(opened(data), data, size, gap)
    assert ours is not None and ours.size == scaled
    # The same picture as Pillow's decode and box reduce to that size.
    fair = pillow(data).resize(scaled, Image.Resampling.BOX)
    assert psnr(ours, fair) > 35


def test_webp_keeps_icc_profile_for_the_colour_conversion() -> None:
    icc = images.linear_rgb_icc()
    data = images.save(PHOTO, "WEBP", icc_profile=icc)
    ours = load_webp(opened(data), data, (100, 67), 1.0)
    assert ours is not None and ours.info["icc_profile"] == icc


def test_webp_with_alpha_or_frames_is_left_to_pillow() -> None:
    transparent = PHOTO.convert("RGBA")
    transparent.putpixel((0, 0), (0, 0, 0, 0))
    animated = images.save(PHOTO, "WEBP", save_all=True, append_images=[PHOTO.rotate(90)])
    for data in (images.save(transparent, "WEBP"), animated):
        assert load_webp(opened(data), data, (100, 67), 1.0) is None


def test_truncated_webp_is_an_os_error() -> None:
    data = images.save(PHOTO, "WEBP", quality=90)
    with pytest.raises(OSError, match="libwebp: not enough data"):
        load_webp(opened(data), data[: len(data) // 2], (100, 67), 1.0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_moderation_copies_decode_scaled_too(fmt: str) -> None:
    """decode_within (the copies sent to the moderation backends) goes through the same
    scaled decoders: the exact fitted size, the same picture as a fair resize."""
    data = images.save(PHOTO, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    info = sniff(data, ImageLimits())
    ours = decode_within(data, info, 100)
    assert (ours.mode, ours.size) == ("RGB", (100, 67))
    fair = pillow(data).convert("RGB").resize((100, 67), Image.Resampling.LANCZOS)
    assert psnr(ours, fair) > 30
