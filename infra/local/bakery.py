"""Baking Open Badges into images, for tests and the demo (not deployed).

- PNG: an ``iTXt`` chunk with keyword ``openbadges`` right after ``IHDR`` (compression flag 0,
  method 0, empty language tag and translated keyword, UTF-8 text), or an older ``tEXt`` one.
- SVG: an ``<openbadges:assertion verify="...">`` element in the ``http://openbadges.org``
  namespace, the assertion JSON in a CDATA child.

Plus tiny image makers and RS256 compact-JWS signing helpers.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPENBADGES_NS = "http://openbadges.org"
KEYWORD = b"openbadges"

Color = str | tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# PNG


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def iter_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, data)`` of every chunk of a PNG. ValueError if it is not a well-formed PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(PNG_SIGNATURE)
    while pos < len(png):
        if pos + 12 > len(png):
            raise ValueError("truncated PNG chunk")
        (length,) = struct.unpack_from(">I", png, pos)
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if len(data) != length:
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, data))
        pos += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("PNG without IHDR")
    return chunks


def _is_openbadges_chunk(kind: bytes, data: bytes) -> bool:
    return kind in (b"iTXt", b"tEXt", b"zTXt") and data.split(b"\0", 1)[0] == KEYWORD


def itxt_data(payload: str, *, compressed: bool = False) -> bytes:
    """The data of an ``iTXt`` chunk carrying ``payload`` under the ``openbadges`` keyword."""
    text = payload.encode("utf-8")
    if compressed:
        text = zlib.compress(text)
    # keyword, NUL, compression flag, compression method, language tag, NUL, translated keyword, NUL
    return KEYWORD + b"\0" + bytes([1 if compressed else 0, 0]) + b"\0" + b"\0" + text


def bake_png(png_bytes: bytes, payload: str, *, compressed: bool = False, chunk: str = "iTXt") -> bytes:
    """Return ``png_bytes`` with ``payload`` baked right after ``IHDR`` (any earlier bake removed)."""
    if chunk == "iTXt":
        baked = png_chunk(b"iTXt", itxt_data(payload, compressed=compressed))
    elif chunk == "tEXt":
        baked = png_chunk(b"tEXt", KEYWORD + b"\0" + payload.encode("latin-1"))
    else:
        raise ValueError(f"unsupported chunk type {chunk!r}")
    out = [PNG_SIGNATURE]
    for kind, data in iter_chunks(png_bytes):
        if _is_openbadges_chunk(kind, data):
            continue
        out.append(png_chunk(kind, data))
        if kind == b"IHDR":
            out.append(baked)
    return b"".join(out)


def unbake_png(png_bytes: bytes) -> str | None:
    """The baked payload of a PNG, or None (a small reader for tests)."""
    for kind, data in iter_chunks(png_bytes):
        if not _is_openbadges_chunk(kind, data):
            continue
        if kind == b"tEXt":
            return data.split(b"\0", 1)[1].decode("latin-1")
        if kind == b"iTXt":
            rest = data[len(KEYWORD) + 1 :]
            flag = rest[0]
            _lang, _translated, text = rest[2:].split(b"\0", 2)
            return (zlib.decompress(text) if flag else text).decode("utf-8")
    return None


def _rgb(color: Color) -> tuple[int, int, int]:
    if isinstance(color, tuple):
        return color
    value = color.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if len(value) != 6:
        raise ValueError(f"not a colour: {color!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def make_png(color: Color, size: int = 64) -> bytes:
    """A valid RGBA PNG: a filled circle of ``color`` on a transparent square."""
    r, g, b = _rgb(color)
    radius = size / 2
    rows = []
    for y in range(size):
        row = bytearray(b"\0")  # filter: none
        dy = y + 0.5 - radius
        for x in range(size):
            dx = x + 0.5 - radius
            inside = dx * dx + dy * dy <= radius * radius
            row += bytes((r, g, b, 255)) if inside else b"\0\0\0\0"
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------
# SVG

_ASSERTION_ELEMENT = re.compile(
    r"<openbadges:assertion\b[^>]*?(?:/>|>.*?</openbadges:assertion>)\s*",
    re.DOTALL,
)
_SVG_OPEN = re.compile(r"<svg\b[^>]*>", re.DOTALL)


def make_svg(color: Color, label: str) -> str:
    """A small standalone SVG badge: a coloured circle with a short label."""
    r, g, b = _rgb(color)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">\n'
        f'  <circle cx="64" cy="64" r="60" fill="#{r:02x}{g:02x}{b:02x}"/>\n'
        f'  <text x="64" y="72" font-size="16" text-anchor="middle" fill="#fff">{escape(label)}</text>\n'
        "</svg>\n"
    )


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def bake_svg(svg_text: str, payload_json: str | None, verify: str) -> str:
    """Return ``svg_text`` with an ``<openbadges:assertion verify=...>`` right inside the root.

    ``verify`` is the hosted assertion URL or the compact JWS. The CDATA child holds
    ``payload_json`` (the assertion JSON of a hosted badge), or, when it is None, ``verify``
    itself, as the reference bakery does for a JWS or a bare URL. An earlier bake is removed and
    the ``openbadges`` namespace declared on the root element.
    """
    svg_text = _ASSERTION_ELEMENT.sub("", svg_text)
    match = _SVG_OPEN.search(svg_text)
    if match is None:
        raise ValueError("no <svg> root element")
    open_tag = match.group(0)
    if "xmlns:openbadges" not in open_tag:
        closing = "/>" if open_tag.endswith("/>") else ">"
        open_tag = open_tag[: -len(closing)].rstrip() + f' xmlns:openbadges="{OPENBADGES_NS}"' + closing
    text = verify if payload_json is None else payload_json
    element = f"<openbadges:assertion verify={quoteattr(verify)}>{_cdata(text)}</openbadges:assertion>"
    if open_tag.endswith("/>"):  # an empty root: give it content
        return svg_text[: match.start()] + open_tag[:-2] + ">" + element + "</svg>" + svg_text[match.end() :]
    return svg_text[: match.start()] + open_tag + "\n  " + element + svg_text[match.end() :]


# --------------------------------------------------------------------------------------------
# Signing


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jws(payload: dict[str, Any], private_key: rsa.RSAPrivateKey, alg_header: str = "RS256") -> str:
    """A compact JWS (RS256) of ``payload``; ``alg_header`` lets 1.0-style ``rs256`` be written."""
    header = b64url(json.dumps({"alg": alg_header}, separators=(",", ":")).encode())
    body = b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{b64url(signature)}"


def tamper_jws(jws: str, changes: dict[str, Any]) -> str:
    """The same JWS with its payload edited and the old signature kept (a forged badge)."""
    header, body, signature = jws.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    forged = b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{header}.{forged}.{signature}"
