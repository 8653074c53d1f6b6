"""Faster decoding for the two formats where Pillow's own path loses to libvips.

Both keep Pillow's header parsing (mode, size, ICC profile, transparency: ``Image.open``
has already run) and return an ordinary Pillow image, or None where Pillow's own path
is kept (the cases each docstring names). Figures: docs/jobs.md "Engine and speed".

* PNG: Pillow inflates with the system zlib, which is about 70 % of decoding. ISA-L's
  inflate (python-isal) takes half the time; its output is handed to Pillow's own PNG
  decoder re-framed as stored (uncompressed) deflate blocks, so Pillow still unfilters
  and unpacks every row as before: the pixels are identical, only the inflate changed.
* WebP: Pillow decodes through libwebp's animation API into an RGBA canvas and copies
  it. libwebp's still-image API (``WebPDecode``, through ctypes, in the very libwebp
  Pillow links) decodes straight to RGB, and can shrink while decoding: its rescaler
  area-averages the Y, U and V planes before colour conversion, which for the integer
  factor chosen here is the box ``reduce`` the Pillow path would do next.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, cast

from isal import isal_zlib
from PIL import Image, ImageFile

if TYPE_CHECKING:
    from PIL._imaging import ImagingDecoder

# --- PNG -----------------------------------------------------------------------------

#: The largest stored deflate block; also the most inflated in one step, so memory
#: stays bounded however well (or maliciously well) the data compresses.
_STORED_MAX = 0xFFFF
_INPUT_STEP = 1 << 16
#: A zlib header Pillow's inflater accepts; the stream never ends (Pillow stops at the
#: last row), so no Adler-32 trailer is needed.
_ZLIB_HEADER = b"\x78\x01"
#: isal's stub declares ``error`` as an instance, not the class it is.
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)


def load_png(im: ImageFile.ImageFile, data: bytes) -> Image.Image | None:
    """The pixels of ``im`` (opened from ``data``, not loaded), inflated with ISA-L.

    None (keep Pillow's path) for palette images (Pillow attaches the palette while
    loading), interlaced ones (Pillow cannot write them, so this path could not be
    tested against its own) and animated ones (frames are composited).
    """
    if (
        im.format != "PNG"
        or im.mode == "P"
        or im.info.get("interlace")
        or getattr(im, "is_animated", False)
        or len(im.tile) != 1
        or im.tile[0].codec_name != "zip"
    ):
        return None
    tile = im.tile[0]
    out = Image.new(im.mode, im.size, None)  # every row is written: no fill needed
    # Pillow's own PNG decoder and arguments, as ImageFile.load would set them up.
    decoder = Image._getdecoder(im.mode, "zip", tile.args)
    decoder.setimage(out.im, tile.extents)
    try:
        complete = _inflate_into(decoder, data, tile.offset)
    except _INFLATE_ERROR as exc:
        raise OSError(f"broken PNG data stream: {exc}") from exc
    finally:
        decoder.cleanup()
    if not complete:
        raise OSError("image file is truncated")
    out.info = dict(im.info)
    return out


def _idat_pieces(data: bytes, offset: int) -> Iterator[memoryview]:
    """The IDAT chunks' data from ``offset`` (the first one's), in pieces of at most
    ``_INPUT_STEP`` bytes: the inflater copies what it leaves unconsumed, so a PNG
    written as one huge IDAT must not be handed over whole."""
    view = memoryview(data)
    position = offset - 8  # the first IDAT's length and type
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind != b"IDAT":
            return
        end = position + 8 + length
        for start in range(position + 8, end, _INPUT_STEP):
            yield view[start : min(start + _INPUT_STEP, end)]
        position = end + 4  # past the CRC


def _inflate_into(decoder: ImagingDecoder | ImageFile.PyDecoder, data: bytes, offset: int) -> bool:
    """Feeds the IDAT data to ``decoder``: True once it has every row, False if the
    data ends first."""
    inflater = isal_zlib.decompressobj()
    header = _ZLIB_HEADER
    for piece in _idat_pieces(data, offset):
        pending: bytes | memoryview = piece
        while True:
            raw = inflater.decompress(pending, _STORED_MAX)
            pending = inflater.unconsumed_tail
            if raw:
                block = struct.pack("<BHH", 0, len(raw), len(raw) ^ 0xFFFF)
                consumed, error = decoder.decode(b"".join((header, block, raw)))
                header = b""
                if consumed < 0:  # the decoder has finished
                    if error < 0:
                        raise OSError(f"broken PNG data stream (decoder error {error})")
                    return True
            # A full block may leave output pending inside the inflater: drain it.
            if not pending and len(raw) < _STORED_MAX:
                break
    return False


# --- WebP ----------------------------------------------------------------------------

#: The WEBP_DECODER_ABI_VERSION of libwebp 1.x's decode.h, whose layout the structures
#: below copy (only another major byte is incompatible; libwebp's init checks that).
_WEBP_ABI = 0x0209
_MODE_RGB = 0
_WEBP_STATUS = {
    1: "out of memory",
    2: "invalid parameter",
    3: "bitstream error",
    4: "unsupported feature",
    5: "suspended",
    6: "user abort",
    7: "not enough data",
}

_int = ctypes.c_int


class _Features(ctypes.Structure):
    _fields_ = [
        ("width", _int),
        ("height", _int),
        ("has_alpha", _int),
        ("has_animation", _int),
        ("format", _int),
        ("pad", ctypes.c_uint32 * 5),
    ]


class _RGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", _int), ("size", ctypes.c_size_t)]


class _YUVABuffer(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("y", "u", "v", "a")),
        *((name, _int) for name in ("y_stride", "u_stride", "v_stride", "a_stride")),
        *((name, ctypes.c_size_t) for name in ("y_size", "u_size", "v_size", "a_size")),
    ]


class _Buffers(ctypes.Union):
    _fields_ = [("RGBA", _RGBABuffer), ("YUVA", _YUVABuffer)]


class _DecBuffer(ctypes.Structure):
    _fields_ = [
        ("colorspace", _int),
        ("width", _int),
        ("height", _int),
        ("is_external_memory", _int),
        ("u", _Buffers),
        ("pad", ctypes.c_uint32 * 4),
        ("private_memory", ctypes.c_void_p),
    ]


class _Options(ctypes.Structure):
    _fields_ = [
        *(
            (name, _int)
            for name in (
                "bypass_filtering",
                "no_fancy_upsampling",
                "use_cropping",
                "crop_left",
                "crop_top",
                "crop_width",
                "crop_height",
                "use_scaling",
                "scaled_width",
                "scaled_height",
                "use_threads",
                "dithering_strength",
                "flip",
                "alpha_dithering_strength",
            )
        ),
        ("pad", ctypes.c_uint32 * 5),
    ]


class _Config(ctypes.Structure):
    _fields_ = [("input", _Features), ("output", _DecBuffer), ("options", _Options)]


@lru_cache(maxsize=1)
def _libwebp() -> ctypes.CDLL | None:
    """libwebp as Pillow links it (bundled in its wheel, or the system's): symbols looked
    up through Pillow's ``_webp`` extension resolve in its dependencies. None if Pillow
    was built without WebP or the library's ABI is not the one described above."""
    try:
        from PIL import _webp

        lib = ctypes.CDLL(_webp.__file__)
        init, decode = lib.WebPInitDecoderConfigInternal, lib.WebPDecode
    except (ImportError, OSError, AttributeError):
        return None
    init.argtypes = [ctypes.POINTER(_Config), _int]
    init.restype = _int
    decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Config)]
    decode.restype = _int
    if not init(ctypes.byref(_Config()), _WEBP_ABI):
        return None
    return lib


def load_webp(
    im: ImageFile.ImageFile, data: bytes, size: tuple[int, int], gap: float
) -> Image.Image | None:
    """The pixels of ``im`` (opened from ``data``, not loaded) decoded by libwebp to RGB,
    shrunk while decoding by the integer factor per axis that a resize to ``size`` with
    ``reducing_gap=gap`` would box-reduce by (so only the residual resize is left).

    None (keep Pillow's path) for WebPs with alpha (libwebp's rescaler does not weight
    colour by alpha, Pillow's resize does) and animated ones.
    """
    lib = _libwebp()
    if lib is None or im.format != "WEBP" or im.mode != "RGB" or getattr(im, "is_animated", False):
        return None
    width, height = im.size
    factor_x = max(1, int(width / size[0] / gap))
    factor_y = max(1, int(height / size[1] / gap))
    # The rescaler maps the whole picture onto the output, so a size that the factor
    # does not divide needs no partial-pixel box afterwards.
    out_w, out_h = round(width / factor_x), round(height / factor_y)
    config = _Config()
    lib.WebPInitDecoderConfigInternal(ctypes.byref(config), _WEBP_ABI)
    if (out_w, out_h) != (width, height):
        config.options.use_scaling = 1
        config.options.scaled_width = out_w
        config.options.scaled_height = out_h
    pixels = bytearray(out_w * out_h * 3)
    target = (ctypes.c_uint8 * len(pixels)).from_buffer(pixels)
    output = config.output
    output.colorspace = _MODE_RGB
    output.is_external_memory = 1
    output.u.RGBA.rgba = ctypes.addressof(target)
    output.u.RGBA.stride = out_w * 3
    output.u.RGBA.size = len(pixels)
    status = lib.WebPDecode(data, len(data), ctypes.byref(config))
    del target  # releases the export of ``pixels``
    if status != 0:
        raise OSError(f"libwebp: {_WEBP_STATUS.get(status, f'status {status}')}")
    out = Image.frombytes("RGB", (out_w, out_h), pixels)
    out.info = dict(im.info)
    return out
