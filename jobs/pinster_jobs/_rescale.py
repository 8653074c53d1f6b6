"""Small decoded copies of an image for the moderation backends (decoded scaled, as
thumbnails are)."""

from __future__ import annotations

from PIL import Image

from pinster_images.errors import PermanentError
from pinster_images.sniff import ImageInfo
from pinster_jobs._thumbnail import DECODE_ERRORS, decode_scaled, flatten, shrink, working_mode


def decode_within(data: bytes, info: ImageInfo, max_side: int) -> Image.Image:
    """RGB pixels of the first frame, fitted inside ``max_side`` x ``max_side``."""
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    try:
        decoded, box = decode_scaled(data, info.content_type, size)
        im = shrink(working_mode(decoded), size, box)
    except DECODE_ERRORS as exc:
        raise PermanentError(f"image cannot be decoded: {exc}", reason="CorruptImage") from exc
    return flatten(im)  # CMYK and grey become RGB there too
