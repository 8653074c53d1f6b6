"""The thumbnail engine: bytes in, JPEG (and WebP) thumbnails out, as fast as libvips.

Speed comes from doing the least work on the fewest pixels (see docs/jobs.md for the
figures against pyvips):

1. the header is sniffed first, so a bomb or an over-limit image is refused before a
   decoder allocates anything (same limits as the upload service);
2. JPEGs decode with shrink-on-load (``Image.draft``: libjpeg's DCT scaling by 1/2, 1/4
   or 1/8) straight to the smallest scale still covering the largest thumbnail; opaque,
   non-animated WebPs likewise (libwebp's scaled decode), and PNGs inflate with ISA-L
   (see ``_decode``);
3. each further shrink is an integer box ``reduce`` while the factor is at least the
   reducing gap, then one bicubic resize for the residual (sub-pixel exact: the area a
   partial last block covers is carried through, as Pillow's ``reducing_gap`` does);
   small outputs (<= FINE_PIXELS) use Lanczos instead, which is cheap at that size;
4. colour conversion (ICC -> sRGB, CMYK -> RGB) and EXIF orientation are applied to
   the first, largest thumbnail rather than to the full image;
5. the other sizes cascade from the previous one, largest first.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

from PIL import Image, ImageCms

from pinster_images.config import parse_size
from pinster_images.errors import PermanentError
from pinster_images.sniff import GIF, JPEG, PNG, WEBP, ImageInfo, ImageLimits, sniff
from pinster_jobs._decode import load_png, load_webp
from pinster_jobs._metadata import exif_orientation
from pinster_jobs._settings import ThumbnailSettings

WEBP_TYPE = "image/webp"
#: Published WebP thumbnails live next to the JPEG ones: ``<md5>_<W>x<H>.webp``.
WEBP_SUFFIX = ".webp"
#: Pillow's ``reducing_gap``: box-reduce by ``int(factor / gap)``, then resample.
REDUCING_GAP = 1.0
#: Outputs up to this many pixels are resampled with Lanczos after at most a gentle box
#: reduce (gap 3, "indistinguishable from fair" per Pillow): they cost little, and it is
#: where chained box steps would compound into softness. Measured in bench/.
FINE_PIXELS = 100_000
FINE_GAP = 3.0
#: The watermark's width as a share of the thumbnail's, and the smallest side it needs.
WATERMARK_SHARE = 0.18
WATERMARK_MIN_SIDE = 100
_RESAMPLE = Image.Resampling.BICUBIC
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)


@dataclass(frozen=True)
class Source:
    """What the headers say: sniffed info, EXIF orientation and the displayed size."""

    info: ImageInfo
    orientation: int

    @property
    def swapped(self) -> bool:
        return self.orientation in (5, 6, 7, 8)

    @property
    def width(self) -> int:
        return self.info.height if self.swapped else self.info.width

    @property
    def height(self) -> int:
        return self.info.width if self.swapped else self.info.height


@dataclass(frozen=True)
class Geometry:
    size: str
    width: int
    height: int


@dataclass(frozen=True)
class Rendition:
    size: str
    width: int
    height: int
    content_type: str
    suffix: str
    data: bytes


def fit(width: int, height: int, size: str) -> tuple[int, int]:
    """The size of a ``width x height`` image fitted inside ``size`` (``<W>x<H>``, a side
    may be ``auto``), keeping its aspect ratio and never enlarging it."""
    box_w, box_h = parse_size(size)
    scales = [box / side for box, side in ((box_w, width), (box_h, height)) if box is not None]
    scale = min([*scales, 1.0])
    if scale >= 1.0:
        return width, height
    out_w = max(1, round(width * scale))
    out_h = max(1, round(height * scale))
    # Float rounding must never push a side past its box.
    return min(out_w, box_w or out_w), min(out_h, box_h or out_h)


def _corrupt(info: ImageInfo, exc: BaseException) -> PermanentError:
    fmt = info.content_type.split("/")[1].upper()
    detail = str(exc).strip() or type(exc).__name__
    return PermanentError(f"{fmt} image cannot be decoded: {detail}", reason="CorruptImage")


def working_mode(im: Image.Image) -> Image.Image:
    """One of RGB, RGBA, L, CMYK: the modes the resizers and converters handle well."""
    mode = im.mode
    if mode in ("RGB", "L") and "transparency" in im.info:
        return im.convert("RGBA")
    if mode in ("RGB", "RGBA", "L", "CMYK"):
        return im
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey: scale to 8 bits; a plain convert would clip everything at 255.
        as_int = im.convert("I") if mode != "I" else im
        extrema = cast(tuple[int, int], as_int.getextrema())
        top = 65535 if mode != "I" or extrema[1] > 255 else 255
        return as_int.point(lambda v: v * (255 / top)).convert("L")
    if mode in ("P", "PA", "LA", "La", "RGBa"):
        has_alpha = mode in ("PA", "LA", "La", "RGBa") or im.has_transparency_data
        return im.convert("RGBA" if has_alpha else "RGB")
    return im.convert("RGB")  # 1, YCbCr, LAB, HSV...


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=16)
def _is_srgb(icc: bytes) -> bool:
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return True  # unreadable: treat as untagged (sRGB is the web's assumption)
    return "srgb" in description.lower()


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB or RGBA in sRGB, converting through the embedded ICC profile when there is one."""
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    base = im.convert("RGB") if alpha is not None else im
    if icc and not (base.mode == "RGB" and _is_srgb(icc)):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(base, source, _srgb(), outputMode="RGB")
            assert converted is not None
            base = converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion below
    if base.mode != "RGB":
        base = base.convert("RGB")
    if alpha is not None:
        base.putalpha(alpha)
    return base


def _resampling(size: tuple[int, int]) -> tuple[Image.Resampling, float]:
    """The filter and reducing gap for an output of ``size`` (see ``FINE_PIXELS``)."""
    if size[0] * size[1] <= FINE_PIXELS:
        return Image.Resampling.LANCZOS, FINE_GAP
    return _RESAMPLE, REDUCING_GAP


def shrink(
    im: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> Image.Image:
    """Resize to ``size``: integer box ``reduce`` first (by at least the reducing gap), then
    bicubic for the residual. ``box`` is the area of ``im`` holding the picture (after a
    draft or reduce whose factor does not divide the size, the last pixel is partial);
    Pillow carries it through both steps, so nothing drifts by a fraction of a pixel."""
    full = (0.0, 0.0, float(im.width), float(im.height))
    if box is None:
        box = full
    if im.size == size and box == full:
        return im
    resample, gap = _resampling(size)
    return im.resize(size, resample, box=box, reducing_gap=gap)


def decode_scaled(
    data: bytes, content_type: str, target: tuple[int, int]
) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """The first frame of ``data``, loaded, decoded as close to ``target`` (as stored,
    before any EXIF rotation) as the format allows: JPEG shrinks on load (DCT scaling),
    opaque WebP through libwebp's scaled decode, PNG inflates with ISA-L (see
    :mod:`._decode`). Returns the image and the box of it :func:`shrink` should use
    (after a draft whose factor does not divide the size, the last pixel is partial)."""
    opened = Image.open(io.BytesIO(data))
    im: Image.Image = opened
    box: tuple[float, float, float, float] | None = None
    if content_type == JPEG:
        drafted = opened.draft(None, target)
        if drafted is not None:
            box = tuple(float(side) for side in drafted[1])  # type: ignore[assignment]
    elif content_type == GIF:
        opened.seek(0)  # the first frame of an animation
    elif content_type == PNG:
        im = load_png(opened, data) or opened
    elif content_type == WEBP:
        im = load_webp(opened, data, target, _resampling(target)[1]) or opened
    im.load()
    return im, box


def flatten(im: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white, as browsers show transparent areas."""
    if im.mode != "RGBA":
        return im.convert("RGB") if im.mode != "RGB" else im
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


class ThumbnailEngine:
    """Renders the thumbnails of one image for a set of sizes; safe to reuse."""

    def __init__(self, settings: ThumbnailSettings, limits: ImageLimits) -> None:
        self.settings = settings
        self.limits = limits
        self._watermark = self._load_watermark(settings.watermark_file)
        self._marks: dict[int, Image.Image] = {}

    @staticmethod
    def _load_watermark(path: Path | None) -> Image.Image | None:
        if path is None:
            return None
        mark = Image.open(path)
        mark.load()
        return mark.convert("RGBA")

    def inspect(self, data: bytes) -> Source:
        """Headers only: raises ``ImageRejected`` (permanent) for refused images."""
        info = sniff(data, self.limits)
        return Source(info=info, orientation=exif_orientation(data, info.content_type))

    def plan(self, source: Source, sizes: Sequence[str]) -> list[Geometry]:
        """The exact output size of each requested size, largest first."""
        geometries = [Geometry(size, *fit(source.width, source.height, size)) for size in sizes]
        return sorted(geometries, key=lambda g: (g.width * g.height, g.size), reverse=True)

    def render(self, data: bytes, sizes: Sequence[str]) -> list[Rendition]:
        source = self.inspect(data)
        plan = self.plan(source, sizes)
        if not plan:
            return []
        first = plan[0]
        stored = (first.height, first.width) if source.swapped else (first.width, first.height)
        try:
            im, box = decode_scaled(data, source.info.content_type, stored)
            icc = im.info.get("icc_profile")
            current = shrink(working_mode(im), stored, box)
        except Image.DecompressionBombError as exc:
            raise PermanentError(str(exc), reason="TooManyPixels") from exc
        except DECODE_ERRORS as exc:
            raise _corrupt(source.info, exc) from exc
        current = _to_srgb(current, icc if isinstance(icc, bytes) else None)
        if source.orientation in _TRANSPOSE:
            current = current.transpose(_TRANSPOSE[source.orientation])
        current.info = {}  # nothing of the source's metadata travels into thumbnails
        renditions: list[Rendition] = []
        for geometry in plan:
            current = shrink(current, (geometry.width, geometry.height))
            renditions += self._encode(current, geometry)
        return renditions

    def _stamp(self, im: Image.Image) -> Image.Image:
        assert self._watermark is not None
        width = max(1, round(im.width * WATERMARK_SHARE))
        mark = self._marks.get(width)
        if mark is None:
            ratio = width / self._watermark.width
            height = max(1, round(self._watermark.height * ratio))
            mark = self._watermark.resize((width, height), Image.Resampling.LANCZOS)
            self._marks[width] = mark
        stamped = im.copy()
        position = (im.width - mark.width, im.height - mark.height)
        if stamped.mode == "RGBA":
            stamped.alpha_composite(mark, position)
        else:
            stamped.paste(mark, position, mark)
        return stamped

    def _encode(self, im: Image.Image, geometry: Geometry) -> list[Rendition]:
        if self._watermark is not None and min(im.size) > WATERMARK_MIN_SIDE:
            im = self._stamp(im)
        quality = self.settings.quality
        buffer = io.BytesIO()
        # As libvips does: full-resolution chroma at high quality, 4:2:0 below.
        subsampling = 0 if quality >= 90 else 2
        flatten(im).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
        out = [Rendition(geometry.size, *im.size, JPEG, "", buffer.getvalue())]
        if self.settings.webp:
            buffer = io.BytesIO()
            im.save(buffer, "WEBP", quality=quality)
            out.append(
                Rendition(geometry.size, *im.size, WEBP_TYPE, WEBP_SUFFIX, buffer.getvalue())
            )
        return out
