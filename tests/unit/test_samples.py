"""The sample images `make run` uploads: present, small, and what their names promise."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_sample_is_shipped_small_and_decodable(tmp_path: Path) -> None:
    generator = _generator()
    assert generator.main(tmp_path) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    shipped = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    assert names == shipped, "run samples/make_samples.py and commit its output"
    formats = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
    for name in shipped:
        path = SAMPLES / name
        assert path.stat().st_size < 200 * 1024, name
        with Image.open(path) as image:
            assert image.format == formats[path.suffix], name
            image.load()


def test_the_landscape_is_stored_sideways_with_an_exif_rotation() -> None:
    with Image.open(SAMPLES / "landscape-exif6.jpg") as image:
        assert image.getexif()[0x0112] == 6
        assert image.height > image.width  # upright only after auto-orient


def test_the_small_sample_is_smaller_than_every_default_thumbnail_box() -> None:
    from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES

    smallest = min(int(size.split("x")[0]) for size in DEFAULT_THUMBNAIL_SIZES)
    with Image.open(SAMPLES / "small.png") as image:
        assert max(image.size) < smallest
