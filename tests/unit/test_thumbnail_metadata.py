"""Location scrubbing of the published original: no GPS, same pixels, orientation kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pinster_jobs import exif_orientation, strip_location

from pinster_images.sniff import JPEG, PNG, WEBP, ImageLimits, sniff
from tests.support import images

TYPES = {"JPEG": JPEG, "PNG": PNG, "WEBP": WEBP}


def pixels(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    return image.convert("RGB").tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_and_xmp_removed_pixels_and_orientation_kept(fmt: str) -> None:
    data = images.with_gps(fmt)
    before = Image.open(io.BytesIO(data)).getexif()
    assert before.get_ifd(0x8825)  # the fixture really carries GPS
    cleaned = strip_location(data, TYPES[fmt])
    image = Image.open(io.BytesIO(cleaned))
    image.load()  # CRCs and structure still valid
    exif = image.getexif()
    assert exif.get_ifd(0x8825) == {}
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "PinsterCam"
    assert b"GPSLatitude" not in cleaned and b"52,31" not in cleaned
    assert "xmp" not in image.info and "XML:com.adobe.xmp" not in image.info
    assert pixels(cleaned) == pixels(data)
    assert sniff(cleaned, ImageLimits()).content_type == TYPES[fmt]


def test_jpeg_scan_data_is_byte_identical() -> None:
    data = images.with_gps("JPEG")
    cleaned = strip_location(data, JPEG)
    scan = data.index(b"\xff\xda")
    assert cleaned[cleaned.index(b"\xff\xda") :] == data[scan:]
    assert len(cleaned) < len(data)  # the XMP segment is gone


def test_exif_block_keeps_its_length() -> None:
    data = images.with_gps("JPEG")
    exif_before = Image.open(io.BytesIO(data)).info["exif"]
    exif_after = Image.open(io.BytesIO(strip_location(data, JPEG))).info["exif"]
    assert len(exif_after) == len(exif_before) and exif_after != exif_before


def test_unparseable_exif_is_dropped_from_jpeg() -> None:
    data = images.jpeg(64, 48)
    broken = b"Exif\x00\x00XX*\x00garbage-with-GPS"
    segment = b"\xff\xe1" + (len(broken) + 2).to_bytes(2, "big") + broken
    poisoned = data[:2] + segment + data[2:]
    cleaned = strip_location(poisoned, JPEG)
    assert b"garbage-with-GPS" not in cleaned
    assert cleaned == data


def test_images_without_metadata_are_unchanged() -> None:
    for data, kind in ((images.jpeg(), JPEG), (images.png(), PNG)):
        assert strip_location(data, kind) == data


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_read_from_the_header(orientation: int) -> None:
    assert exif_orientation(images.oriented_jpeg(orientation), JPEG) == orientation


def test_orientation_defaults_to_one() -> None:
    assert exif_orientation(images.png(), PNG) == 1
    assert exif_orientation(b"\xff\xd8\xff\xe1\x00\x08Exif", JPEG) == 1
