"""Small decoded copies of an image for the moderation backends (shrink-on-load)."""

from __future__ import annotations

import io

from PIL import Image

from pinster_images.errors import PermanentError
from pinster_images.sniff import JPEG, ImageInfo
from pinster_jobs._thumbnail import DECODE_ERRORS, flatten, working_mode


def decode_within(data: bytes, info: ImageInfo, max_side: int) -> Image.Image:
    """RGB pixels of the first frame, fitted inside ``max_side`` x ``max_side``."""
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    try:
        opened = Image.open(io.BytesIO(data))
        if info.content_type == JPEG:
            opened.draft("RGB", size)
        opened.load()
        im = working_mode(opened)
    except DECODE_ERRORS as exc:
        raise PermanentError(f"image cannot be decoded: {exc}", reason="CorruptImage") from exc
    if im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if im.mode == "CMYK":
        im = im.convert("RGB")
    return flatten(im)
