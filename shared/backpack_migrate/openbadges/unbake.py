"""Read the badge payload baked into a PNG or SVG image, safely and with bounded work."""

from __future__ import annotations

import re
import struct
import zlib
from xml.etree.ElementTree import Element  # type only; parsing goes through defusedxml

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from .errors import UnbakeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 10_000_000  # badge images are small; Backpack capped uploads far below this
MAX_PAYLOAD_BYTES = 1_000_000  # a baked assertion, URL or JWS
MAX_CHUNKS = 10_000
OPENBADGES_NS = "http://openbadges.org"
_TEXT_CHUNKS = (b"iTXt", b"tEXt", b"zTXt")
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        return False
    lowered = head.lower()
    return b"<svg" in lowered or lowered.startswith((b"<?xml", b"<!doctype svg", b"<!--"))


def unbake(data: bytes) -> str:
    """The payload text baked into a PNG (iTXt/tEXt/zTXt `openbadges`) or SVG image.

    Raises UnbakeError with code NOT_AN_IMAGE, SVG_UNSAFE, IMAGE_TOO_LARGE, NOTHING_BAKED or
    BAKED_DATA_UNREADABLE.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UnbakeError("NOT_AN_IMAGE")
    data = bytes(data)
    if len(data) > MAX_IMAGE_BYTES:
        raise UnbakeError("IMAGE_TOO_LARGE")
    if is_png(data):
        return _unbake_png(data)
    if looks_like_svg(data):
        return _unbake_svg(data)
    raise UnbakeError("NOT_AN_IMAGE")


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, MAX_PAYLOAD_BYTES + 1)
    except zlib.error as exc:
        raise UnbakeError("BAKED_DATA_UNREADABLE") from exc
    if len(out) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
        raise UnbakeError("BAKED_DATA_UNREADABLE")
    return out


def _decode_text_chunk(kind: bytes, body: bytes) -> str | None:
    """The text of an `openbadges` text chunk, or None when the chunk has another keyword."""
    keyword, sep, rest = body.partition(b"\x00")
    if not sep or keyword != b"openbadges":
        return None
    try:
        if kind == b"tEXt":
            text = rest.decode("latin-1")
        elif kind == b"zTXt":
            if not rest or rest[0] != 0:
                raise UnbakeError("BAKED_DATA_UNREADABLE")
            text = _inflate(rest[1:]).decode("latin-1")
        else:  # iTXt: flag, method, language\0, translated keyword\0, text
            if len(rest) < 2:
                raise UnbakeError("BAKED_DATA_UNREADABLE")
            compressed, method = rest[0], rest[1]
            _language, sep1, rest = rest[2:].partition(b"\x00")
            _translated, sep2, raw = rest.partition(b"\x00")
            if not (sep1 and sep2):
                raise UnbakeError("BAKED_DATA_UNREADABLE")
            if compressed:
                if method != 0:
                    raise UnbakeError("BAKED_DATA_UNREADABLE")
                raw = _inflate(raw)
            text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnbakeError("BAKED_DATA_UNREADABLE") from exc
    return text


def _unbake_png(data: bytes) -> str:
    pos = len(PNG_SIGNATURE)
    end = len(data)
    for _ in range(MAX_CHUNKS):
        if pos + 8 > end:
            break
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body_start = pos + 8
        body_end = body_start + length
        if body_end + 4 > end:
            # A truncated chunk: whatever came before it has been read already.
            if kind in _TEXT_CHUNKS and data[body_start:].startswith(b"openbadges\x00"):
                raise UnbakeError("BAKED_DATA_UNREADABLE")
            break
        if kind in _TEXT_CHUNKS:
            text = _decode_text_chunk(kind, data[body_start:body_end])
            if text is not None:
                text = text.strip().strip("\x00").strip()
                if not text:
                    raise UnbakeError("BAKED_DATA_UNREADABLE")
                if len(text) > MAX_PAYLOAD_BYTES:
                    raise UnbakeError("BAKED_DATA_UNREADABLE")
                return text
        if kind == b"IEND":
            break
        pos = body_end + 4  # skip the CRC
    raise UnbakeError("NOTHING_BAKED")


def _local_name(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _find_assertion(root: Element) -> Element | None:
    for element in root.iter():
        ns, local = _local_name(element.tag)
        if local == "assertion" and (ns.rstrip("/") == OPENBADGES_NS or "openbadges" in ns):
            return element
    return None


def _is_compact_jws(text: str) -> bool:
    return bool(_JWS.match(text))


def _unbake_svg(data: bytes) -> str:
    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        # Entity declarations or external references: an SVG, but one we refuse to expand.
        raise UnbakeError("SVG_UNSAFE") from exc
    except (SafeET.ParseError, ValueError, RecursionError) as exc:
        raise UnbakeError("NOT_AN_IMAGE") from exc
    _ns, local = _local_name(root.tag)
    if local != "svg":
        raise UnbakeError("NOT_AN_IMAGE")
    element = _find_assertion(root)
    if element is None:
        raise UnbakeError("NOTHING_BAKED")
    # A signed badge's proof is the compact JWS in the `verify` attribute; the CDATA child then
    # holds only a copy of the payload, which proves nothing on its own.
    verify = (element.get("verify") or "").strip()
    text = verify if _is_compact_jws(verify) else (element.text or "").strip()
    if not text:
        text = verify
    if not text:
        raise UnbakeError("BAKED_DATA_UNREADABLE")
    if len(text) > MAX_PAYLOAD_BYTES:
        raise UnbakeError("BAKED_DATA_UNREADABLE")
    return text
