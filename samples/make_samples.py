"""Generate the sample images that `make run` uploads (deterministic, each under 200 KB).

Run: ``.venv/bin/python samples/make_samples.py`` (rewrites the files next to this script).
They are drawn, not photographed, so the repository carries no third-party content; each
exercises a different path of the pipeline (JPEG with an EXIF rotation, PNG with
transparency, WebP, a portrait and a small one that is never upscaled).
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
LIMIT = 200 * 1024


def _gradient(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=colour)
    return image


def landscape() -> bytes:
    """A sunset over hills, 1600x900 JPEG, stored rotated with EXIF orientation 6."""
    image = _gradient(1600, 900, (255, 140, 60), (90, 40, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse([1100, 250, 1350, 500], fill=(255, 220, 120))
    for i, colour in enumerate([(60, 90, 60), (40, 70, 45), (25, 50, 30)]):
        base = 600 + i * 100
        points = [(x, base - 120 * math.sin(x / (180 + 40 * i) + i)) for x in range(0, 1601, 20)]
        draw.polygon([(0, 900), *points, (1600, 900)], fill=colour)
    # Stored on its side with orientation 6: the thumbnails must come out upright.
    rotated = image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    rotated.save(buffer, "JPEG", quality=80, exif=exif.tobytes())
    return buffer.getvalue()


def portrait() -> bytes:
    """A lighthouse, 800x1200 JPEG."""
    image = _gradient(800, 1200, (120, 180, 240), (230, 240, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 950, 800, 1200], fill=(40, 80, 150))
    draw.polygon([(330, 950), (470, 950), (440, 400), (360, 400)], fill=(245, 245, 245))
    for y in range(450, 950, 120):
        draw.polygon([(355, y), (445, y), (450, y + 50), (350, y + 50)], fill=(200, 40, 40))
    draw.rectangle([350, 330, 450, 400], fill=(60, 60, 60))
    draw.ellipse([370, 340, 430, 390], fill=(255, 230, 100))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def logo() -> bytes:
    """A pin logo with a transparent background, 512x512 PNG (flattened in JPEG thumbnails)."""
    image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([136, 60, 376, 300], fill=(220, 40, 80, 255))
    draw.polygon([(160, 240), (352, 240), (256, 460)], fill=(220, 40, 80, 255))
    draw.ellipse([206, 130, 306, 230], fill=(255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def pattern() -> bytes:
    """Concentric rings, 1024x1024 WebP."""
    image = Image.new("RGB", (1024, 1024), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    for i, radius in enumerate(range(500, 0, -40)):
        colour = (40 + (i * 37) % 200, 80 + (i * 53) % 160, 120 + (i * 29) % 130)
        draw.ellipse([512 - radius, 512 - radius, 512 + radius, 512 + radius], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


def small() -> bytes:
    """A 96x64 PNG, smaller than every thumbnail box: never upscaled."""
    image = _gradient(96, 64, (30, 160, 120), (20, 60, 90))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SAMPLES: dict[str, Callable[[], bytes]] = {
    "landscape-exif6.jpg": landscape,
    "portrait.jpg": portrait,
    "logo.png": logo,
    "rings.webp": pattern,
    "small.png": small,
}


def main(directory: Path = HERE) -> int:
    for name, make in SAMPLES.items():
        data = make()
        if len(data) >= LIMIT:
            print(f"{name}: {len(data)} bytes is over the {LIMIT} byte budget", file=sys.stderr)
            return 1
        (directory / name).write_bytes(data)
        print(f"{directory / name} {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
