"""Reading an upload body while it arrives, holding the image once.

Two forms reach the same :class:`ImageSink` (decoded bytes + running md5 + byte limit):

* raw: ``Content-Type: image/*`` - the body *is* the image;
* JSON: ``{"data": {"image": "data:image/png;base64,...", ...}}`` - the original form.
  :class:`JsonBodyScanner` copies the JSON text to a small *outline*, except the one long
  data-URI string, whose base64 is decoded chunk by chunk into the sink and replaced in
  the outline by a placeholder. So memory is about the decoded image plus one chunk,
  not body + parsed string + decoded bytes (about 3.7x the image).
"""

from __future__ import annotations

import binascii
import hashlib
import mmap
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

from pinster_images.sniff import ImageLimits, too_large
from pinster_ingress._errors import error, missing_fields

#: JSON text other than the image may not exceed this (names are < 140 characters).
OUTLINE_LIMIT = 1 << 20
#: A string longer than this that holds a data URI is streamed instead of buffered.
STREAM_THRESHOLD = 1024
#: Bytes an image map starts with when the request does not announce its length.
INITIAL_CAPACITY = 1 << 20
#: Idle image maps kept for reuse (resident memory held after a burst of uploads).
IDLE_MAPS_BYTES = 32 << 20
#: Most bytes one sized read of an image file returns. botocore reads a body in 1 MiB
#: blocks (the payload hash, the checksum): a megabyte copied per read of every upload in
#: flight, where 64 KiB blocks come and go from the allocator's reused memory.
READ_SIZE = 64 << 10

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Like Node's Buffer.from(s, "base64"): skip what is not base64, accept URL-safe "-_",
# stop at padding.
_DELETE = bytes(b for b in range(256) if b not in _B64 + b"-_=")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_DATA_URI = re.compile(rb'data:([^/;"\\]+)\\?/([^;"\\]+);base64,')
_SIMPLE_ESCAPES = {ord("/"): b"/"}  # others (\n, \", ...) are not base64 and are dropped
#: Standard base64 of at least one byte, padded: what the document asks clients to send.
_CANONICAL_BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"


class _IdleMaps:
    """Image maps kept for the next uploads, at most ``limit`` bytes of them.

    The first write to each 4 KiB page of a fresh map costs a page fault: about 0.55 ms
    of CPU per MB on these machines, a seventh of the unavoidable work of a raw upload. A
    reused map's pages are resident already. Under steady load uploads end and start at
    the same pace, so a few idle maps serve them all.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> mmap.mmap:
        """A map of at least ``size`` bytes: the smallest idle one that fits, else the
        largest grown (its pages stay), else a new one."""
        with self._lock:
            fitting = [m for m in self._idle if len(m) >= size]
            chosen = min(fitting, key=len) if fitting else max(self._idle, key=len, default=None)
            if chosen is not None:
                self._idle.remove(chosen)
        if chosen is None:
            # Private: a shared anonymous map is a fixed-size shmem object, and writing
            # past its first size after a resize raises SIGBUS.
            return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        if len(chosen) < size:
            chosen.resize(size)
        chosen.seek(0)
        return chosen

    def give(self, used: mmap.mmap) -> None:
        with self._lock:
            if sum(map(len, self._idle)) + len(used) <= self._limit:
                self._idle.append(used)
                return
        used.close()


_MAPS = _IdleMaps(IDLE_MAPS_BYTES)


class _ImageFile:
    """An image map read as a binary file (``read``, ``seek``, ``tell``, ``len``), in
    blocks of at most :data:`READ_SIZE`: a short read is within a file's contract."""

    def __init__(self, data: mmap.mmap) -> None:
        self._map = data

    def read(self, size: int = -1) -> bytes:
        return self._map.read(None if size < 0 else min(size, READ_SIZE))

    def seek(self, offset: int, whence: Literal[0, 1, 2] = 0) -> int:
        self._map.seek(offset, whence)
        return self._map.tell()

    def tell(self) -> int:
        return self._map.tell()

    def __len__(self) -> int:
        return len(self._map)


class ImageSink:
    """Decoded image bytes, their md5, and the byte limit enforced while they grow.

    The bytes live in an anonymous memory map, not a BytesIO: a page is resident only once
    written, so the map is reserved at the size the request announces and grows (mremap)
    without a copy. Sixteen BytesIO growing side by side held 1.3-1.9x their bytes (the
    allocator's fragments); the maps hold 1.0x. Closed, a map goes to :data:`_MAPS`.
    Bytes past ``len(self)`` may be an earlier upload's: nothing reads them.
    """

    def __init__(self, limits: ImageLimits, expected: int = 0) -> None:
        self.limits = limits
        self._map = _MAPS.take(min(max(expected, INITIAL_CAPACITY), limits.max_bytes + 1))
        self._size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)  # a content address, not a MAC

    def write(self, chunk: bytes) -> None:
        end = self._size + len(chunk)
        if end > self.limits.max_bytes:
            raise too_large(None, self.limits)
        if end > len(self._map):
            self._map.resize(min(max(end, 2 * len(self._map)), self.limits.max_bytes))
        self._map.write(chunk)
        self._size = end
        self._md5.update(chunk)

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    def view(self) -> memoryview:
        """The bytes without a copy; release it before :meth:`file` or :meth:`close`."""
        return memoryview(self._map)[: self._size]

    def file(self) -> IO[bytes]:
        """The bytes as a file for storage to read (not empty: the empty image is refused)."""
        if len(self._map) != self._size:
            self._map.resize(self._size)  # so that len(), read() and seek end at the image
        self._map.seek(0)
        # What storage clients call of a file, without being an IO subclass.
        return cast(IO[bytes], _ImageFile(self._map))

    def close(self) -> None:
        """Hand the map on now, not when the last reference goes (storage clients keep
        some); every view must be released. A sink is not used after this."""
        _MAPS.give(self._map)

    def __len__(self) -> int:
        return self._size


class Base64Decoder:
    """Incremental base64 -> bytes, in whole quanta, into a sink."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._carry = b""
        self._done = False

    def feed(self, text: bytes) -> None:
        if self._done or self._feed_plain(text):
            return
        cleaned = text.translate(_URLSAFE, _DELETE)
        pad = cleaned.find(b"=")
        if pad != -1:
            cleaned, self._done = cleaned[:pad], True
        data = self._carry + cleaned
        cut = len(data) - len(data) % 4
        if cut:
            self._write(binascii.a2b_base64(data[:cut]))
        self._carry = data[cut:]

    def _feed_plain(self, text: bytes) -> bool:
        """Decode text of the standard alphabet alone (what encoders send) without the
        cleaning copy; False, having done nothing, for anything else."""
        if b"=" in text or b"-" in text or b"_" in text:
            return False
        data = self._carry + text if self._carry else text
        cut = len(data) - len(data) % 4
        if data[cut:].translate(None, _B64):  # the carried tail must be clean too
            return False
        try:
            decoded = binascii.a2b_base64(memoryview(data)[:cut], strict_mode=True)
        except binascii.Error:  # a character outside the alphabet: the cleaning path
            return False
        self._write(decoded)
        self._carry = data[cut:]
        return True

    def close(self) -> None:
        if len(self._carry) >= 2:  # a single leftover character carries no whole byte
            self._write(binascii.a2b_base64(self._carry + b"=" * (4 - len(self._carry))))
        self._carry = b""


class _JsonStringContent:
    """The raw content of a JSON string (escapes and all) -> its characters, ASCII only."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._pending = b""

    def feed(self, raw: bytes) -> None:
        if self._pending:
            raw, self._pending = self._pending + raw, b""
        pos = 0
        while True:
            slash = raw.find(b"\\", pos)
            if slash == -1:
                self._write(raw[pos:])
                return
            self._write(raw[pos:slash])
            if slash + 1 >= len(raw) or (raw[slash + 1] == ord("u") and slash + 6 > len(raw)):
                self._pending = raw[slash:]
                return
            if raw[slash + 1] == ord("u"):
                try:
                    code = int(raw[slash + 2 : slash + 6], 16)
                except ValueError:
                    raise missing_fields() from None
                if code < 128:
                    self._write(bytes([code]))
                pos = slash + 6
            else:
                self._write(_SIMPLE_ESCAPES.get(raw[slash + 1], b""))
                pos = slash + 2


def _string_end(chunk: bytes, pos: int, escaped: bool) -> tuple[int, bool]:
    """Index of the closing quote of the JSON string at ``pos`` (-1: not in this chunk),
    and whether the chunk ends inside an escape."""
    n = len(chunk)
    if escaped:
        pos += 1
    quote = chunk.find(b'"', pos)
    while True:
        slash = chunk.find(b"\\", pos, quote if quote != -1 else n)
        if slash == -1:
            return quote, False
        if slash + 1 >= n:
            return -1, True
        pos = slash + 2
        if quote != -1 and pos > quote:  # that quote was escaped
            quote = chunk.find(b'"', pos)


@dataclass(frozen=True)
class StreamedImage:
    """A data URI decoded while the body arrived."""

    mime_type: str
    mime_subtype: str
    sink: ImageSink
    text_length: int  # characters of the JSON string, for field-length checks


@dataclass(frozen=True)
class ParsedJson:
    document: Any
    placeholder: str
    streamed: StreamedImage | None


class JsonBodyScanner:
    _OUT, _STRING, _BLOB = range(3)

    def __init__(self, limits: ImageLimits, expected_image: int = 0) -> None:
        self._limits = limits
        self._expected_image = expected_image  # decoded bytes the body's length allows
        self._outline = bytearray()
        self._state = self._OUT
        self._string = bytearray()
        self._escaped = False
        self._checked = False
        self._placeholder = f"\\u0000pinster-image-{secrets.token_hex(8)}"
        self._streamed: StreamedImage | None = None
        self._sink: ImageSink | None = None
        self._blob: _JsonStringContent | None = None
        self._decoder: Base64Decoder | None = None
        self._blob_type = (b"", b"")
        self._blob_chars = 0

    def _emit(self, data: bytes | bytearray) -> None:
        self._outline += data
        if len(self._outline) > OUTLINE_LIMIT:
            raise error(
                413,
                "FieldsTooLarge",
                f"JSON fields other than data.image exceed {OUTLINE_LIMIT} bytes",
            )

    def _promote(self) -> None:
        """A long string: stream it if it is a data URI, else keep buffering it."""
        self._checked = True
        match = _DATA_URI.search(self._string, 0, 512)
        if match is None:
            return
        if self._sink is not None:
            raise error(400, "TooManyImages", "a request carries one image, in data.image")
        self._sink = ImageSink(self._limits, self._expected_image)
        self._decoder = Base64Decoder(self._sink.write)
        self._blob = _JsonStringContent(self._decoder.feed)
        self._blob_type = (match.group(1), match.group(2))
        self._blob_chars = len(self._string)
        self._blob.feed(bytes(self._string[match.end() :]))
        self._string = bytearray()
        self._state = self._BLOB

    def _finish_blob(self) -> None:
        assert self._decoder is not None and self._sink is not None
        self._decoder.close()
        self._streamed = StreamedImage(
            mime_type=self._blob_type[0].decode("utf-8", "replace"),
            mime_subtype=self._blob_type[1].decode("utf-8", "replace"),
            sink=self._sink,
            text_length=self._blob_chars,
        )

    def feed(self, chunk: bytes) -> None:
        pos, n = 0, len(chunk)
        while pos < n:
            if self._state == self._OUT:
                quote = chunk.find(b'"', pos)
                stop = n if quote == -1 else quote + 1
                self._emit(chunk[pos:stop])
                pos = stop
                if quote != -1:
                    self._state, self._escaped, self._checked = self._STRING, False, False
                continue
            if self._state == self._STRING and not self._checked:
                # Take at most what decides whether this string is a data URI.
                room = STREAM_THRESHOLD + 1 - len(self._string)
                end, _ = _string_end(chunk, pos, self._escaped)
                if end == -1 or end - pos > room:
                    self._string += chunk[pos : pos + room]
                    pos += room
                    trailing = len(self._string) - len(self._string.rstrip(b"\\"))
                    self._escaped = trailing % 2 == 1
                    if len(self._string) > STREAM_THRESHOLD:
                        self._promote()
                    continue
                self._string += chunk[pos:end]
                self._emit(self._string + b'"')
                self._string = bytearray()
                self._state, self._escaped = self._OUT, False
                pos = end + 1
                continue
            end, self._escaped = _string_end(chunk, pos, self._escaped)
            stop = n if end == -1 else end
            if self._state == self._STRING:
                self._string += chunk[pos:stop]
                if len(self._string) + len(self._outline) > OUTLINE_LIMIT:
                    self._emit(self._string)  # raises
                if end != -1:
                    self._emit(self._string + b'"')
                    self._string = bytearray()
                    self._state = self._OUT
            else:
                assert self._blob is not None
                self._blob.feed(chunk[pos:stop])
                self._blob_chars += stop - pos
                if end != -1:
                    self._finish_blob()
                    self._emit(self._placeholder.encode() + b'"')
                    self._state = self._OUT
            pos = n if end == -1 else end + 1

    def close(self) -> ParsedJson:
        import json

        if self._state != self._OUT:
            raise missing_fields()
        try:
            document = json.loads(self._outline)
        except (ValueError, RecursionError):
            raise missing_fields() from None
        return ParsedJson(
            document=document,
            placeholder="\x00" + self._placeholder.removeprefix("\\u0000"),
            streamed=self._streamed,
        )


def data_uri_pattern(media_types: tuple[str, ...]) -> str:
    """The canonical data URI of an image, as a JSON Schema pattern.

    Every string it matches gets past :func:`decode_data_uri` and the type check (an
    ``image/*`` type, a non-empty payload). The reader accepts more, as the original
    did: any ``image/`` subtype (then 415), URL-safe base64, characters skipped.
    """
    subtypes = "|".join(t.removeprefix("image/") for t in media_types)
    # Subtypes are [a-z0-9-]: nothing in them needs escaping in any regex dialect.
    return f"^data:image/(?:{subtypes});base64,{_CANONICAL_BASE64}$"


def decode_data_uri(value: str, limits: ImageLimits) -> tuple[str, str, ImageSink] | None:
    """A data URI given in full (a short one): (type, subtype, decoded) or None."""
    match = _DATA_URI.search(value.encode("utf-8", "replace"))
    if match is None:
        return None
    payload = value.encode("utf-8", "replace")[match.end() :]
    if not payload.strip():
        return None
    sink = ImageSink(limits)
    decoder = Base64Decoder(sink.write)
    decoder.feed(payload)
    decoder.close()
    return (
        match.group(1).decode("utf-8", "replace"),
        match.group(2).decode("utf-8", "replace"),
        sink,
    )


__all__ = [
    "Base64Decoder",
    "ImageSink",
    "JsonBodyScanner",
    "ParsedJson",
    "StreamedImage",
    "data_uri_pattern",
    "decode_data_uri",
]
