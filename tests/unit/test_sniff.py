"""Content sniffing from headers: formats, sizes, and every refusal with its status."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pinster_images.errors import ConfigError, PermanentError
from pinster_images.sniff import (
    ImageInfo,
    ImageLimits,
    ImageRejected,
    check_declared,
    normalise_type,
    sniff,
)
from tests.support import images

LIMITS = ImageLimits()


@pytest.mark.parametrize(
    ("fmt", "options", "content_type"),
    [
        ("JPEG", {}, "image/jpeg"),
        ("JPEG", {"progressive": True}, "image/jpeg"),
        ("PNG", {}, "image/png"),
        ("GIF", {}, "image/gif"),
        ("WEBP", {}, "image/webp"),
        ("WEBP", {"lossless": True}, "image/webp"),
        ("AVIF", {}, "image/avif"),
    ],
)
def test_sniffs_format_and_size_from_headers(
    fmt: str, options: dict[str, object], content_type: str
) -> None:
    info = sniff(images.encode(fmt, 123, 45, **options), LIMITS)
    assert info == ImageInfo(content_type=content_type, width=123, height=45, frames=1)


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("GIF", "image/gif"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_counts_animation_frames(fmt: str, content_type: str) -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in ("red", "blue", "green", "white")]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    info = sniff(buffer.getvalue(), LIMITS)
    assert (info.content_type, info.frames) == (content_type, 4)
    with pytest.raises(ImageRejected) as caught:
        sniff(buffer.getvalue(), ImageLimits(max_frames=3))
    assert caught.value.status == 422
    assert caught.value.reason == "TooManyFrames"
    assert "PINSTER_MAX_FRAMES=3" in caught.value.message


def test_accepts_memoryview() -> None:
    assert sniff(memoryview(images.jpeg(10, 20)), LIMITS).height == 20


def _rejected(data: bytes, limits: ImageLimits = LIMITS) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        sniff(data, limits)
    assert isinstance(caught.value, PermanentError)
    return caught.value


def test_png_declared_as_jpeg_is_refused() -> None:
    info = sniff(images.png(), LIMITS)
    with pytest.raises(ImageRejected) as caught:
        check_declared(info, "image/jpeg")
    assert caught.value.status == 415
    assert caught.value.reason == "ContentTypeMismatch"
    assert "image/png" in caught.value.message


@pytest.mark.parametrize(
    "declared", ["image/jpeg", "image/jpg", "IMAGE/JPEG", "image/pjpeg", "image/jpeg; q=1"]
)
def test_jpeg_aliases_agree(declared: str) -> None:
    check_declared(sniff(images.jpeg(), LIMITS), declared)


def test_normalise_type() -> None:
    assert normalise_type(" Image/JPG ;x=y") == "image/jpeg"
    assert normalise_type("image/heif") == "image/heic"


@pytest.mark.parametrize(
    "text", [b"hello, this is text and not an image\n", b"", b"<svg/>", b"%PDF-1.7"]
)
def test_text_declared_as_image_is_refused(text: bytes) -> None:
    error = _rejected(text)
    assert (error.status, error.reason) == (415, "UnsupportedImageType")


def test_truncated_jpeg_is_refused() -> None:
    data = images.jpeg(200, 200)
    error = _rejected(data[: len(data) // 2])
    assert (error.status, error.reason) == (422, "TruncatedImage")


def test_jpeg_cut_inside_headers_is_truncated() -> None:
    error = _rejected(images.jpeg()[:40])
    assert (error.status, error.reason) == (422, "TruncatedImage")


def test_jpeg_with_padding_after_eoi_is_accepted() -> None:
    assert sniff(images.jpeg() + b"\x00" * 10, LIMITS).content_type == "image/jpeg"


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP"])
def test_truncated_other_formats_are_refused(fmt: str) -> None:
    data = images.encode(fmt, 300, 300)
    error = _rejected(data[: len(data) - 20])
    assert (error.status, error.reason) == (422, "TruncatedImage")


@pytest.mark.parametrize("bomb", [images.png_bomb, images.jpeg_bomb])
def test_decompression_bomb_is_refused_from_the_header(bomb: object) -> None:
    assert callable(bomb)
    data = bomb()
    assert len(data) < 2000  # tiny file
    error = _rejected(data)
    assert (error.status, error.reason) == (422, "TooManyPixels")
    assert "PINSTER_MAX_PIXELS=50000000" in error.message


def test_pixel_limit_is_configurable() -> None:
    assert sniff(images.jpeg(100, 100), ImageLimits(max_pixels=10_000)).width == 100
    error = _rejected(images.jpeg(101, 100), ImageLimits(max_pixels=10_000))
    assert error.reason == "TooManyPixels"


def test_byte_limit_is_413_and_names_the_limit() -> None:
    data = images.jpeg(100, 100)
    error = _rejected(data, ImageLimits(max_bytes=len(data) - 1))
    assert (error.status, error.reason) == (413, "ImageTooLarge")
    assert f"PINSTER_MAX_BYTES={len(data) - 1}" in error.message


def test_png_with_zero_width_is_corrupt() -> None:
    error = _rejected(images.png_bomb(0, 10))
    assert (error.status, error.reason) == (422, "CorruptImage")


def test_jpeg_without_frame_header_is_corrupt() -> None:
    error = _rejected(b"\xff\xd8\xff\xda\x00\x02\xff\xd9")
    assert (error.status, error.reason) == (422, "CorruptImage")


def test_heic_without_codec_is_unsupported() -> None:
    # ftyp box with brand heic; pillow-heif is not a dependency.
    ftyp = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    error = _rejected(ftyp + b"\x00" * 32)
    assert (error.status, error.reason) == (415, "UnsupportedImageType")
    assert "image/heic" in error.message


def test_limits_from_env() -> None:
    env = {"PINSTER_MAX_BYTES": "10", "PINSTER_MAX_PIXELS": "20", "PINSTER_MAX_FRAMES": "3"}
    assert ImageLimits.from_env(env) == ImageLimits(10, 20, 3)
    assert ImageLimits.from_env({}) == ImageLimits(25 * 1024 * 1024, 50_000_000, 1000)
    with pytest.raises(ConfigError, match="PINSTER_MAX_PIXELS"):
        ImageLimits.from_env({"PINSTER_MAX_PIXELS": "lots"})
