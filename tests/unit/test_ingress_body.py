"""The streaming JSON/base64 reader: any chunking, JSON escapes, one image, bounded memory."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinster_ingress import HttpError
from pinster_ingress._body import (
    INITIAL_CAPACITY,
    READ_SIZE,
    STREAM_THRESHOLD,
    Base64Decoder,
    ImageSink,
    JsonBodyScanner,
)

from pinster_images.sniff import ImageLimits, ImageRejected
from tests.support import images

LIMITS = ImageLimits()
IMAGE = images.noisy_jpeg(6000)


def _scan(raw: bytes, cuts: list[int]) -> tuple[JsonBodyScanner, object]:
    scanner = JsonBodyScanner(LIMITS)
    previous = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        scanner.feed(raw[previous:cut])
        previous = cut
    return scanner, scanner.close()


def _document(image_text: str, escape_slashes: bool = False, name: str = "Pin name") -> bytes:
    raw = json.dumps({"data": {"name": name, "image": image_text, "featured": "x"}})
    if escape_slashes:  # as PHP's json_encode writes it
        raw = raw.replace("/", "\\/")
    return raw.encode()


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=12),
    escape_slashes=st.booleans(),
)
def test_any_chunking_gives_the_same_image(cuts: list[int], escape_slashes: bool) -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(IMAGE).decode()
    _, parsed = _scan(_document(uri, escape_slashes), cuts)
    assert parsed.streamed is not None  # type: ignore[attr-defined]
    streamed = parsed.streamed  # type: ignore[attr-defined]
    assert (streamed.mime_type, streamed.mime_subtype) == ("image", "jpeg")
    assert streamed.sink.md5 == hashlib.md5(IMAGE).hexdigest()
    with streamed.sink.view() as view:
        assert bytes(view) == IMAGE
    document = parsed.document  # type: ignore[attr-defined]
    assert document["data"]["image"] == parsed.placeholder  # type: ignore[attr-defined]
    assert document["data"]["name"] == "Pin name"


def test_unicode_escapes_and_line_breaks_inside_base64() -> None:
    encoded = base64.encodebytes(IMAGE).decode()  # MIME: a newline every 76 characters
    raw = json.dumps({"data": {"image": "data:image/jpeg;base64," + encoded}}).encode()
    raw = raw.replace(b"A", b"\\u0041")
    _, parsed = _scan(raw, [1000, 1001, 1002, 1003, 1004, 1005])
    assert parsed.streamed.sink.md5 == hashlib.md5(IMAGE).hexdigest()  # type: ignore[attr-defined]


def test_url_safe_base64_is_accepted() -> None:
    sink = ImageSink(LIMITS)
    decoder = Base64Decoder(sink.write)
    decoder.feed(base64.urlsafe_b64encode(IMAGE).rstrip(b"="))
    decoder.close()
    assert sink.md5 == hashlib.md5(IMAGE).hexdigest()


def test_the_outline_stays_small() -> None:
    big = images.noisy_jpeg(200_000)
    scanner, parsed = _scan(
        _document("data:image/jpeg;base64," + base64.b64encode(big).decode()), []
    )
    assert len(scanner._outline) < 200  # the base64 text is never buffered
    assert len(parsed.streamed.sink) == len(big)  # type: ignore[attr-defined]


def test_long_plain_strings_stay_in_the_outline() -> None:
    _, parsed = _scan(
        _document("data:image/png;base64,AAAA", name="n" * (STREAM_THRESHOLD * 3)), [50, 2000]
    )
    assert parsed.streamed is None  # type: ignore[attr-defined]
    assert parsed.document["data"]["name"] == "n" * (STREAM_THRESHOLD * 3)  # type: ignore[attr-defined]


def test_two_streamed_images_are_refused() -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(IMAGE).decode()
    raw = json.dumps({"data": {"image": uri, "name": uri}}).encode()
    with pytest.raises(HttpError) as caught:
        _scan(raw, [])
    assert (caught.value.status, caught.value.reason) == (400, "TooManyImages")


def test_byte_limit_while_decoding() -> None:
    scanner = JsonBodyScanner(ImageLimits(max_bytes=1000))
    uri = "data:image/jpeg;base64," + base64.b64encode(IMAGE).decode()
    with pytest.raises(ImageRejected) as caught:
        scanner.feed(_document(uri))
    assert caught.value.status == 413


def test_fields_beyond_the_outline_limit_are_413() -> None:
    scanner = JsonBodyScanner(LIMITS)
    with pytest.raises(HttpError) as caught:
        for _ in range(40):
            scanner.feed(b'{"x": "' + b"y" * 50_000 + b'", ')
    assert caught.value.status == 413


@pytest.mark.parametrize("expected", [0, 10, len(IMAGE), 10 * len(IMAGE)])
def test_a_sink_holds_exactly_its_image_whatever_length_was_announced(expected: int) -> None:
    # A reused map still holds the earlier upload's bytes past the new image's end.
    earlier = ImageSink(LIMITS, 20 * len(IMAGE))
    earlier.write(b"\xaa" * 20 * len(IMAGE))
    earlier.close()
    sink = ImageSink(LIMITS, expected)
    for start in range(0, len(IMAGE), 999):
        sink.write(IMAGE[start : start + 999])
    with sink.view() as view:
        assert bytes(view) == IMAGE
    stored = sink.file()
    assert stored.read() == IMAGE and stored.read() == b""
    assert stored.seek(0, 2) == len(IMAGE) == len(stored)  # type: ignore[arg-type]
    assert (len(sink), sink.md5) == (len(IMAGE), hashlib.md5(IMAGE).hexdigest())
    sink.close()


def test_a_sink_grows_past_its_first_size() -> None:
    # A body without Content-Length: the map starts at INITIAL_CAPACITY and grows.
    big = bytes(range(256)) * ((3 * INITIAL_CAPACITY) // 256 + 1)
    sink = ImageSink(ImageLimits(max_bytes=len(big)))
    for start in range(0, len(big), 65536):
        sink.write(big[start : start + 65536])
    stored = sink.file()
    blocks = list(iter(lambda: stored.read(1 << 20), b""))  # as botocore reads a body
    assert b"".join(blocks) == big and max(map(len, blocks)) == READ_SIZE
    sink.close()


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2800), max_size=12),
    line_breaks=st.booleans(),
)
def test_base64_in_any_chunks_decodes_to_the_bytes(
    data: bytes, cuts: list[int], line_breaks: bool
) -> None:
    # Chunks of the plain alphabet take the fast path, the others (line breaks, padding)
    # the cleaning one; what is carried between chunks must survive every switch.
    text = base64.encodebytes(data) if line_breaks else base64.b64encode(data)
    decoded: list[bytes] = []
    decoder = Base64Decoder(decoded.append)
    previous = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        decoder.feed(text[previous:cut])
        previous = max(previous, cut)
    decoder.close()
    assert b"".join(decoded) == data
