"""The thumbnail engine on real, awkward and hostile images: exact sizes, orientation,
colour, transparency, metadata, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from pinster_jobs import Rendition, ThumbnailEngine, ThumbnailSettings, fit

from pinster_images.errors import PermanentError
from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
from pinster_images.sniff import ImageLimits, ImageRejected
from tests.support import images


@pytest.fixture(scope="module")
def engine() -> ThumbnailEngine:
    return ThumbnailEngine(ThumbnailSettings(), ImageLimits())


def decoded(rendition: Rendition) -> Image.Image:
    image = Image.open(io.BytesIO(rendition.data))
    image.load()
    return image


def sizes_of(renditions: list[Rendition]) -> dict[str, tuple[int, int]]:
    """size -> the pixel size of the *encoded* thumbnail, checked against the claim."""
    result = {}
    for rendition in renditions:
        image = decoded(rendition)
        assert image.size == (rendition.width, rendition.height)
        assert image.format == "JPEG" and image.mode == "RGB"
        result[rendition.size] = image.size
    return result


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (4000, 3000, "1024x1024", (1024, 768)),
        (3000, 4000, "1024x1024", (768, 1024)),
        (2000, 2000, "512x512", (512, 512)),
        (4000, 3000, "400xauto", (400, 300)),
        (4000, 3000, "autox300", (400, 300)),
        (3000, 4000, "400xauto", (400, 533)),
        (4000, 3000, "100x300", (100, 75)),
        (300, 200, "1024x1024", (300, 200)),
        (300, 200, "autox5000", (300, 200)),
        (5000, 1, "128x128", (128, 1)),
    ],
)
def test_fit_inside_without_upscaling(
    width: int, height: int, size: str, expected: tuple[int, int]
) -> None:
    assert fit(width, height, size) == expected


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1600, 1200, {"1024x1024": (1024, 768), "512x512": (512, 384), "400xauto": (400, 300)}),
        (1200, 1600, {"1024x1024": (768, 1024), "512x512": (384, 512), "400xauto": (400, 533)}),
        (1500, 1500, {"1024x1024": (1024, 1024), "512x512": (512, 512), "400xauto": (400, 400)}),
    ],
    ids=["landscape", "portrait", "square"],
)
def test_jpeg_dimensions(
    engine: ThumbnailEngine, width: int, height: int, expected: dict[str, tuple[int, int]]
) -> None:
    data = images.photo_jpeg(width, height)
    assert sizes_of(engine.render(data, list(expected))) == expected


def test_auto_sides_and_small_source_never_upscaled(engine: ThumbnailEngine) -> None:
    data = images.photo_jpeg(300, 200)
    got = sizes_of(engine.render(data, ["1024x1024", "autox100", "150xauto", "64x64"]))
    assert got == {
        "1024x1024": (300, 200),
        "autox100": (150, 100),
        "150xauto": (150, 100),
        "64x64": (64, 43),
    }


def test_default_sizes_cascade_from_a_large_jpeg(engine: ThumbnailEngine) -> None:
    data = images.photo_jpeg(4000, 3000)
    got = sizes_of(engine.render(data, DEFAULT_THUMBNAIL_SIZES))
    assert got == {
        "1024x1024": (1024, 768),
        "512x512": (512, 384),
        "256x256": (256, 192),
        "128x128": (128, 96),
    }


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_are_applied(engine: ThumbnailEngine, orientation: int) -> None:
    data = images.oriented_jpeg(orientation, width=300, height=200)
    (small,) = engine.render(data, ["150x150"])
    image = decoded(small)
    assert image.size == (150, 100)  # displayed landscape whatever was stored
    # The red marker quadrant is top-left once displayed; the rest is blue.
    r, g, b = image.getpixel((10, 10))  # type: ignore[misc]
    assert r > 200 and b < 60, (orientation, (r, g, b))
    r, g, b = image.getpixel((140, 90))  # type: ignore[misc]
    assert b > 200 and r < 60, (orientation, (r, g, b))
    assert not image.getexif()  # orientation consumed, nothing carried over


def test_cmyk_jpeg_becomes_rgb(engine: ThumbnailEngine) -> None:
    data = images.cmyk_jpeg(400, 300)
    source = Image.open(io.BytesIO(data)).convert("RGB")
    (thumb,) = engine.render(data, ["200x200"])
    image = decoded(thumb)
    assert image.size == (200, 150) and image.mode == "RGB"
    # Colours survive the trip (CMYK inversion handled): compare a mean per channel.
    expected = source.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    got = image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert all(abs(a - b) < 12 for a, b in zip(expected, got, strict=True)), (expected, got)  # type: ignore[arg-type]


@pytest.mark.parametrize("color", [True, False], ids=["rgb16", "grey16"])
def test_16_bit_png_is_scaled_not_clipped(engine: ThumbnailEngine, color: bool) -> None:
    data = images.png16(400, 300, color=color)
    (thumb,) = engine.render(data, ["200x200"])
    image = decoded(thumb)
    assert image.size == (200, 150)
    # A horizontal ramp 0..65535: dark at the left, mid-grey in the middle, white right.
    left, middle, right = (image.getpixel((x, 75))[0] for x in (2, 100, 197))  # type: ignore[index]
    assert left < 20 and 100 < middle < 160 and right > 235, (left, middle, right)


def test_palette_png_transparency_is_flattened_on_white(engine: ThumbnailEngine) -> None:
    data = images.palette_png(400, 300)
    (thumb,) = engine.render(data, ["200x200"])
    image = decoded(thumb)
    assert image.size == (200, 150) and image.mode == "RGB"
    r, g, b = image.getpixel((20, 75))  # type: ignore[misc]
    assert min(r, g, b) > 240  # transparent half -> white
    r, g, b = image.getpixel((180, 75))  # type: ignore[misc]
    assert g > 150 and r < 60  # opaque green half


def test_animated_gif_uses_the_first_frame(engine: ThumbnailEngine) -> None:
    data = images.animated_gif(400, 300, frames=3)
    (thumb,) = engine.render(data, ["100x100"])
    image = decoded(thumb)
    assert image.size == (100, 75)
    r, g, b = image.getpixel((50, 37))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60  # the first frame is red


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_thumbnails_carry_no_metadata(engine: ThumbnailEngine, fmt: str) -> None:
    data = images.with_gps(fmt)
    for rendition in engine.render(data, ["256x256", "128x128"]):
        image = decoded(rendition)
        assert not image.getexif()
        assert "icc_profile" not in image.info and "xmp" not in image.info
        assert b"Exif" not in rendition.data and b"GPS" not in rendition.data


def test_webp_thumbnails_when_configured() -> None:
    engine = ThumbnailEngine(ThumbnailSettings(webp=True, quality=70), ImageLimits())
    renditions = engine.render(images.palette_png(400, 300), ["200x200"])
    kinds = {(r.content_type, r.suffix) for r in renditions}
    assert kinds == {("image/jpeg", ""), ("image/webp", ".webp")}
    webp = next(r for r in renditions if r.suffix == ".webp")
    image = decoded(webp)
    assert image.format == "WEBP" and image.size == (200, 150)
    assert image.mode == "RGBA"  # WebP keeps the transparency JPEG cannot


def test_watermark_bottom_right_only_above_100px(tmp_path: Path) -> None:
    mark = Image.new("RGBA", (100, 50), (0, 255, 0, 255))
    mark_file = tmp_path / "mark.png"
    mark.save(mark_file)
    engine = ThumbnailEngine(ThumbnailSettings(watermark_file=mark_file), ImageLimits())
    source = images.save(Image.new("RGB", (1000, 800), (0, 0, 255)), "PNG")
    big, small = engine.render(source, ["500x500", "100x100"])
    image = decoded(big)
    assert image.size == (500, 400)
    # 18 % of 500 px = 90 px wide, 45 px high, in the bottom-right corner.
    assert image.getpixel((500 - 45, 400 - 20))[1] > 200  # type: ignore[index]
    assert image.getpixel((500 - 100, 400 - 20))[2] > 200  # type: ignore[index]
    assert image.getpixel((500 - 45, 400 - 60))[2] > 200  # type: ignore[index]
    tiny = decoded(small)
    assert tiny.size == (100, 80)
    assert tiny.getpixel((95, 75))[2] > 200  # type: ignore[index]  # no watermark


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (images.truncated_jpeg(), "TruncatedImage", "truncated"),
        (images.lying_png(), "CorruptImage", "cannot be decoded"),
        (images.png_bomb(), "TooManyPixels", "pixel limit"),
        (images.jpeg_bomb(), "TooManyPixels", "pixel limit"),
        (b"%PDF-1.7 hello", "UnsupportedImageType", "not a supported image"),
    ],
    ids=["truncated", "lying-header", "png-bomb", "jpeg-bomb", "not-an-image"],
)
def test_hostile_files_fail_permanently_with_a_clear_reason(
    engine: ThumbnailEngine, data: bytes, reason: str, words: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        engine.render(data, DEFAULT_THUMBNAIL_SIZES)
    assert caught.value.reason == reason
    assert words in caught.value.message


def test_bomb_is_refused_before_decoding(engine: ThumbnailEngine) -> None:
    with pytest.raises(ImageRejected) as caught:
        engine.inspect(images.png_bomb(20_000, 20_000))
    assert "400000000 pixels" in caught.value.message


def test_icc_profile_is_converted_to_srgb(engine: ThumbnailEngine) -> None:
    data = images.linear_tagged_jpeg(200, 100, level=128)
    (thumb,) = engine.render(data, ["100x100"])
    image = decoded(thumb)
    assert "icc_profile" not in image.info
    # Linear 0.5 is sRGB ~188; had the profile been ignored it would still read 128.
    value = image.getpixel((50, 25))[0]  # type: ignore[index]
    assert 180 <= value <= 195, value


def test_srgb_tagged_images_are_left_alone(engine: ThumbnailEngine) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = images.save(Image.new("RGB", (200, 100), (128, 128, 128)), "JPEG", icc_profile=srgb)
    (thumb,) = engine.render(data, ["100x100"])
    assert abs(decoded(thumb).getpixel((50, 25))[0] - 128) <= 2  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_shrink_matches_a_fair_full_resolution_resize(fmt: str) -> None:
    """Shrink-on-load and box reduces must not shift or alias the picture: compared with
    a fair Lanczos resize of the full image, the thumbnail stays close (PSNR)."""
    import numpy as np

    engine = ThumbnailEngine(ThumbnailSettings(quality=100), ImageLimits())
    source = images.photo(2001, 1501, seed=11)  # odd sides: partial last blocks
    options = {
        "JPEG": {"quality": 100, "subsampling": 0},
        "WEBP": {"lossless": True},  # colour as is: only the resizing is measured
    }
    data = images.save(source, fmt, **options.get(fmt, {}))
    # factor 15.6: reduce(15), 1/8 draft, or libwebp's rescaler to 1/5 (gap 3)
    (thumb,) = engine.render(data, ["128x128"])
    ours = np.asarray(decoded(thumb), dtype=np.float64)
    fair = np.asarray(source.resize((128, 96), Image.Resampling.LANCZOS), dtype=np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((ours - fair) ** 2))
    assert psnr > 36, psnr
