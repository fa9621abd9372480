"""Unbaking PNG and SVG badges, and staying safe on hostile input."""

from __future__ import annotations

import contextlib
import json
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ob_helpers import itxt, png_chunk, svg_with, text_chunk, tiny_png

from backpack_migrate.openbadges import UnbakeError, extract, unbake
from backpack_migrate.openbadges.parse import PayloadError, classify, parse_date, parse_json_text

pytestmark = pytest.mark.unit

URL = "https://issuer.example/assertions/1"
ASSERTION = {
    "@context": "https://w3id.org/openbadges/v2",
    "type": "Assertion",
    "id": URL,
    "badge": {"name": "Kite Flying", "issuer": {"name": "Kite School"}},
    "issuedOn": "2020-01-02T03:04:05Z",
}


def test_png_itxt_uncompressed() -> None:
    assert unbake(tiny_png(itxt(URL))) == URL


def test_png_itxt_compressed() -> None:
    payload = json.dumps(ASSERTION)
    assert json.loads(unbake(tiny_png(itxt(payload, compressed=True)))) == ASSERTION


def test_png_text_chunk_old_style() -> None:
    assert unbake(tiny_png(text_chunk(URL))) == URL


def test_png_ztxt_chunk() -> None:
    body = b"openbadges\x00\x00" + zlib.compress(URL.encode())
    assert unbake(tiny_png(png_chunk(b"zTXt", body))) == URL


def test_png_other_keywords_are_ignored() -> None:
    data = tiny_png(
        text_chunk("GIMP", keyword=b"Software"), itxt("<x:xmpmeta/>", keyword=b"XML:com.adobe.xmp")
    )
    with pytest.raises(UnbakeError) as info:
        unbake(data)
    assert info.value.code == "NOTHING_BAKED"
    assert info.value.message.endswith(".")


def test_png_first_openbadges_chunk_wins() -> None:
    assert unbake(tiny_png(itxt(URL), itxt("https://other.example/x"))) == URL


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "NOT_AN_IMAGE"),
        (b"GIF89a....", "NOT_AN_IMAGE"),
        (b"\xff\xd8\xff\xe0JFIF", "NOT_AN_IMAGE"),
        (b'{"recipient": "x"}', "NOT_AN_IMAGE"),
        (b"\x89PNG\r\n\x1a\n", "NOTHING_BAKED"),
        (tiny_png(), "NOTHING_BAKED"),
        (tiny_png(itxt("   ")), "BAKED_DATA_UNREADABLE"),
        (tiny_png(png_chunk(b"iTXt", b"openbadges\x00\x01\x00\x00\x00not zlib")), "BAKED_DATA_UNREADABLE"),
        (tiny_png(png_chunk(b"iTXt", b"openbadges\x00\x00\x00\x00\x00\xff\xfe")), "BAKED_DATA_UNREADABLE"),
        (tiny_png(png_chunk(b"iTXt", b"openbadges\x00")), "BAKED_DATA_UNREADABLE"),
        (
            b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 1_000_000) + b"iTXtopenbadges\x00",
            "BAKED_DATA_UNREADABLE",
        ),
        (b"<html><body>hi</body></html>", "NOT_AN_IMAGE"),
    ],
)
def test_unreadable_inputs(data: bytes, code: str) -> None:
    with pytest.raises(UnbakeError) as info:
        unbake(data)
    assert info.value.code == code


def test_png_zip_bomb_is_capped() -> None:
    bomb = zlib.compress(b"a" * 50_000_000, 9)
    body = b"openbadges\x00\x01\x00\x00\x00" + bomb
    image = tiny_png(png_chunk(b"iTXt", body))
    tracemalloc.start()
    try:
        with pytest.raises(UnbakeError) as info:
            unbake(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "BAKED_DATA_UNREADABLE"
    assert peak < 20_000_000  # refused at the cap, not after inflating all 50 MB


def test_too_large_image() -> None:
    with pytest.raises(UnbakeError) as info:
        unbake(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10_000_001)
    assert info.value.code == "IMAGE_TOO_LARGE"


def test_svg_cdata_json_wins_over_verify_attribute() -> None:
    payload = json.dumps(ASSERTION)
    assert json.loads(unbake(svg_with(verify=URL, cdata=payload))) == ASSERTION


def test_svg_verify_attribute_when_no_cdata() -> None:
    assert unbake(svg_with(verify=URL)) == URL
    assert unbake(svg_with(verify=URL, cdata="  ")) == URL


def test_svg_without_assertion() -> None:
    with pytest.raises(UnbakeError) as info:
        unbake(b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>')
    assert info.value.code == "NOTHING_BAKED"


def test_svg_with_doctype_still_reads() -> None:
    data = svg_with(verify=URL).replace(
        b"<svg ",
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<svg ',
        1,
    )
    assert unbake(data) == URL


def test_svg_external_entity_is_refused(tmp_path: object) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="http://openbadges.org">'
        b"<openbadges:assertion>&xxe;</openbadges:assertion></svg>"
    )
    with pytest.raises(UnbakeError) as info:
        unbake(xxe)
    # An SVG, refused for what it asks a reader to do: not "not an image".
    assert info.value.code == "SVG_UNSAFE"
    assert "unsafe" in info.value.message
    assert "root:" not in info.value.message


def test_svg_billion_laughs_is_refused_quickly() -> None:
    entities = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l0 "lol">{entities}]>'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="http://openbadges.org">'
        "<openbadges:assertion>&l9;</openbadges:assertion></svg>"
    ).encode()
    with pytest.raises(UnbakeError) as info:  # entities are refused, never expanded
        unbake(bomb)
    assert info.value.code == "SVG_UNSAFE"


def test_svg_that_is_not_well_formed_is_not_an_image() -> None:
    with pytest.raises(UnbakeError) as info:
        unbake(b'<svg xmlns="http://www.w3.org/2000/svg"><rect></svg>')
    assert info.value.code == "NOT_AN_IMAGE"


def test_svg_signed_badge_takes_the_jws_from_the_verify_attribute() -> None:
    jws = "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"
    # The reference bakery's shape: the JWS in the attribute, the payload JSON in CDATA.
    assert unbake(svg_with(verify=jws, cdata=json.dumps(ASSERTION))) == jws
    # A hosted bake still reads its JSON (which names the URL to fetch).
    assert json.loads(unbake(svg_with(verify=URL, cdata=json.dumps(ASSERTION)))) == ASSERTION


def test_deeply_nested_json_fails_cleanly() -> None:
    with pytest.raises(PayloadError):
        parse_json_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UnbakeError) as info:
        extract(tiny_png(itxt("{" + '"a":{' * 50_000 + "}" * 50_001)))
    assert info.value.code == "BAKED_DATA_UNREADABLE"


def test_huge_json_fails_cleanly() -> None:
    with pytest.raises(PayloadError):
        parse_json_text('{"a": "' + "x" * 3_000_000 + '"}')


def test_json_constants_are_not_json() -> None:
    with pytest.raises(PayloadError):
        parse_json_text('{"a": NaN}')


def test_classify() -> None:
    assert classify(" https://a.example/x ") == "url"
    assert classify('{"a": 1}') == "json"
    assert classify("eyJhbGciOiJSUzI1NiJ9.e30.c2ln") == "jws"
    assert classify("file:///etc/passwd") is None
    assert classify("hello") is None


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        (1359217910, "2013-01-26T16:31:50+00:00"),
        ("1359217910", "2013-01-26T16:31:50+00:00"),
        ("2015-04-30", "2015-04-30T00:00:00+00:00"),
        ("2013-02-18T18:10+0500", "2013-02-18T13:10:00+00:00"),
        ("2016-12-31T23:59:59Z", "2016-12-31T23:59:59+00:00"),
        ("2017-06-29T21:50:14+00:00", "2017-06-29T21:50:14+00:00"),
    ],
)
def test_parse_date(value: object, iso: str) -> None:
    assert parse_date(value).isoformat() == iso


@pytest.mark.parametrize("value", ["2015-04-31", "2015-13-01", "yesterday", "", True, None, [], 10**20])
def test_parse_date_rejects(value: object) -> None:
    from backpack_migrate.openbadges.parse import DateError

    with pytest.raises(DateError):
        parse_date(value)


# ------------------------------------------------------------------------------------------ fuzzing


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_png_body(tail: bytes) -> None:
    try:
        result = unbake(b"\x89PNG\r\n\x1a\n" + tail)
    except UnbakeError as exc:
        assert exc.code in {"NOTHING_BAKED", "BAKED_DATA_UNREADABLE"}
    else:
        assert isinstance(result, str)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"iTXt", b"tEXt", b"zTXt", b"IDAT", b"IEND", b"abcd"]),
            st.one_of(
                st.binary(max_size=200),
                st.builds(lambda b: b"openbadges\x00" + b, st.binary(max_size=200)),
            ),
            st.booleans(),
        ),
        max_size=6,
    )
)
def test_fuzz_png_chunks(chunks: list[tuple[bytes, bytes, bool]]) -> None:
    data = b"\x89PNG\r\n\x1a\n"
    for kind, body, truncate in chunks:
        chunk = png_chunk(kind, body)
        data += chunk[: len(chunk) // 2] if truncate else chunk
    try:
        result = unbake(data)
    except UnbakeError as exc:
        assert exc.code in {"NOTHING_BAKED", "BAKED_DATA_UNREADABLE"}
    else:
        assert isinstance(result, str) and result


@settings(max_examples=200)
@given(st.text(max_size=500))
def test_fuzz_svg_text(text: str) -> None:
    data = svg_with(verify=None, cdata=text.replace("]]>", ""))
    try:
        result = unbake(data)
    except UnbakeError as exc:
        assert exc.code in {"NOT_AN_IMAGE", "SVG_UNSAFE", "BAKED_DATA_UNREADABLE", "NOTHING_BAKED"}
    else:
        assert isinstance(result, str)


@settings(max_examples=200)
@given(st.binary(max_size=1024))
def test_fuzz_svg_bytes(body: bytes) -> None:
    with contextlib.suppress(UnbakeError):
        unbake(b"<svg " + body)


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_fuzz_extract_payload(text: str) -> None:
    try:
        extracted = extract(tiny_png(itxt(text)))
    except UnbakeError as exc:
        assert exc.code in {"BAKED_DATA_UNREADABLE", "NOTHING_BAKED"}
    else:
        assert extracted.payload_kind in {"url", "json", "jws"}


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=30,
    )
)
def test_fuzz_extract_json_shapes(value: object) -> None:
    try:
        extracted = extract(
            tiny_png(itxt(json.dumps({"recipient": value, "badge": value, "issuedOn": value})))
        )
    except UnbakeError:
        return
    assert extracted.payload_kind == "json"
