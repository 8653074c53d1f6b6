"""EXIF orientation and location scrubbing, on the container bytes, without decoding pixels.

The original is published with the same pixels as uploaded but without where it was
taken. Edits are lossless and local:

* an EXIF block (JPEG APP1, PNG ``eXIf``, WebP ``EXIF``, the ``Exif`` item of HEIC/AVIF)
  keeps its length; the GPS IFD's entries and the data they point at are zeroed in
  place, so no offset anywhere needs fixing and the orientation tag survives;
* text metadata that may name places is dropped whole: JPEG XMP (APP1) and IPTC
  (APP13), PNG ``tEXt``/``zTXt``/``iTXt``, WebP ``XMP``;
* an EXIF block that cannot be parsed is dropped whole (JPEG, PNG, WebP) rather than
  published unchecked.
"""

from __future__ import annotations

import struct
import zlib

from pinster_images.sniff import GIF, JPEG, PNG, WEBP

EXIF_HEADER = b"Exif\x00\x00"
TAG_ORIENTATION = 0x0112
TAG_GPS_IFD = 0x8825
#: Bytes per value of each TIFF field type (1 BYTE ... 13 IFD).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


class _BadTiff(ValueError):
    pass


class _Tiff:
    """Bounds-checked view of a TIFF structure (the body of an EXIF block)."""

    def __init__(self, buf: bytearray, start: int, end: int) -> None:
        self.buf, self.start, self.end = buf, start, end
        order = bytes(buf[start : start + 2])
        if order == b"II":
            self.endian = "<"
        elif order == b"MM":
            self.endian = ">"
        else:
            raise _BadTiff("no TIFF byte order mark")
        if self.u16(2) != 42:
            raise _BadTiff("no TIFF magic number")

    def _check(self, offset: int, size: int) -> int:
        absolute = self.start + offset
        if offset < 0 or absolute + size > self.end:
            raise _BadTiff("offset outside the EXIF block")
        return absolute

    def u16(self, offset: int) -> int:
        value: int = struct.unpack_from(self.endian + "H", self.buf, self._check(offset, 2))[0]
        return value

    def u32(self, offset: int) -> int:
        value: int = struct.unpack_from(self.endian + "I", self.buf, self._check(offset, 4))[0]
        return value

    def entries(self, ifd: int) -> list[tuple[int, int, int, int, int]]:
        """(entry offset, tag, type, count, value-or-offset) of each entry of an IFD."""
        count = self.u16(ifd)
        result = []
        for index in range(count):
            at = ifd + 2 + 12 * index
            self._check(at, 12)
            result.append((at, self.u16(at), self.u16(at + 2), self.u32(at + 4), self.u32(at + 8)))
        return result

    def zero(self, offset: int, size: int) -> None:
        absolute = self._check(offset, size)
        self.buf[absolute : absolute + size] = bytes(size)


def _orientation_of(tiff: _Tiff) -> int:
    for at, tag, type_, _, _ in tiff.entries(tiff.u32(4)):
        if tag == TAG_ORIENTATION and type_ == 3:  # SHORT, stored inline
            value = tiff.u16(at + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _scrub_gps(tiff: _Tiff) -> bool:
    """Zero the GPS IFD (entries, out-of-line values, count) in place; True if found."""
    found = False
    for _, tag, _, _, gps in tiff.entries(tiff.u32(4)):
        if tag != TAG_GPS_IFD:
            continue
        found = True
        entries = tiff.entries(gps)
        for at, _, type_, count, value in entries:
            size = _TYPE_SIZES.get(type_, 1) * count
            if size > 4:
                tiff.zero(value, size)
            tiff.zero(at, 12)
        tiff.zero(gps, 2)  # zero entries; the "next IFD" offset that follows reads 0
    return found


def _tiff_start(block: bytes | bytearray, offset: int = 0) -> int:
    """Where the TIFF header starts in an EXIF block (with or without ``Exif\\0\\0``)."""
    if bytes(block[offset : offset + 6]) == EXIF_HEADER:
        return offset + 6
    return offset


# --- walking containers -------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each header segment before the scan (SOS not included)."""
    segments = []
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:
            break
        length = struct.unpack_from(">H", data, offset + 2)[0]
        segments.append((marker, offset, offset + 2 + length))
        offset += 2 + length
    return segments


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk, end including the CRC."""
    chunks = []
    offset = 8
    while offset + 12 <= len(data):
        length = struct.unpack_from(">I", data, offset)[0]
        kind = bytes(data[offset + 4 : offset + 8])
        end = offset + 12 + length
        chunks.append((kind, offset, min(end, len(data))))
        if kind == b"IEND":
            break
        offset = end
    return chunks


def _riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    chunks = []
    offset = 12
    while offset + 8 <= len(data):
        kind = bytes(data[offset : offset + 4])
        size = struct.unpack_from("<I", data, offset + 4)[0]
        end = offset + 8 + size + (size & 1)
        chunks.append((kind, offset, min(end, len(data))))
        offset = end
    return chunks


def _exif_blocks(data: bytes, content_type: str) -> list[tuple[int, int]]:
    """(tiff start, block end) of each EXIF block the container holds."""
    blocks = []
    if content_type == JPEG:
        for marker, start, end in _jpeg_segments(data):
            if marker == 0xE1 and data[start + 4 : start + 10] == EXIF_HEADER:
                blocks.append((start + 10, end))
    elif content_type == PNG:
        for kind, start, end in _png_chunks(data):
            if kind == b"eXIf":
                blocks.append((_tiff_start(data, start + 8), end - 4))
    elif content_type == WEBP:
        for kind, start, end in _riff_chunks(data):
            if kind == b"EXIF":
                blocks.append((_tiff_start(data, start + 8), end))
    elif content_type != GIF:  # HEIC/AVIF: an Exif item, found by its header
        at = data.find(EXIF_HEADER)
        while at != -1:
            blocks.append((at + 6, len(data)))
            at = data.find(EXIF_HEADER, at + 6)
    return blocks


def exif_orientation(data: bytes, content_type: str) -> int:
    """The EXIF orientation (1-8) the image declares; 1 when none or unreadable."""
    for start, end in _exif_blocks(data, content_type):
        try:
            return _orientation_of(_Tiff(bytearray(data[start:end]), 0, end - start))
        except (_BadTiff, struct.error):
            continue
    return 1


# --- scrubbing ------------------------------------------------------------------------


def _scrub_block(buf: bytearray, start: int, end: int) -> bool:
    """Scrub GPS in place; False when the block cannot be parsed (caller drops it)."""
    try:
        _scrub_gps(_Tiff(buf, start, end))
    except (_BadTiff, struct.error):
        return False
    return True


def _strip_jpeg(data: bytes) -> bytes:
    segments = _jpeg_segments(data)
    body_start = segments[-1][2] if segments else 2
    out = bytearray(data[:2])
    for marker, start, end in segments:
        segment = bytearray(data[start:end])
        if marker == 0xE1 and segment[4:10] == EXIF_HEADER:
            if not _scrub_block(segment, 10, len(segment)):
                continue
        elif marker in (0xE1, 0xED):  # XMP and other APP1 payloads, IPTC (APP13)
            continue
        out += segment
    out += data[body_start:]
    return bytes(out)


def _strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    last = 8
    for kind, start, end in _png_chunks(data):
        last = end
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        chunk = bytearray(data[start:end])
        if kind == b"eXIf":
            if not _scrub_block(chunk, _tiff_start(chunk, 8), len(chunk) - 4):
                continue
            struct.pack_into(">I", chunk, len(chunk) - 4, zlib.crc32(bytes(chunk[4:-4])))
        out += chunk
    out += data[last:]
    return bytes(out)


def _strip_webp(data: bytes) -> bytes:
    out = bytearray(data[:12])
    dropped_exif = dropped_xmp = False
    for kind, start, end in _riff_chunks(data):
        chunk = bytearray(data[start:end])
        if kind == b"XMP ":
            dropped_xmp = True
            continue
        if kind == b"EXIF" and not _scrub_block(chunk, _tiff_start(chunk, 8), len(chunk)):
            dropped_exif = True
            continue
        out += chunk
    first = _riff_chunks(bytes(out))
    if first and first[0][0] == b"VP8X":  # keep the feature flags truthful
        flags = out[20]
        if dropped_exif:
            flags &= ~0x08
        if dropped_xmp:
            flags &= ~0x04
        out[20] = flags
    struct.pack_into("<I", out, 4, len(out) - 8)
    return bytes(out)


def _strip_generic(data: bytes) -> bytes:
    buf = bytearray(data)
    for start, end in _exif_blocks(data, ""):
        _scrub_block(buf, start, end)
    return bytes(buf)


def strip_location(data: bytes, content_type: str) -> bytes:
    """``data`` with GPS EXIF and place-bearing text metadata removed, pixels untouched."""
    if content_type == JPEG:
        return _strip_jpeg(data)
    if content_type == PNG:
        return _strip_png(data)
    if content_type == WEBP:
        return _strip_webp(data)
    if content_type == GIF:
        return data  # GIF carries no EXIF
    return _strip_generic(data)
