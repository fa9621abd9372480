"""Helpers for the Open Badges tests: keys, signed badges, baked images, offline fetchers."""

from __future__ import annotations

import base64
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from backpack_migrate.openbadges import FetchedDocument, MapFetcher

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CORPUS = Path(os.environ.get("OB_CORPUS", PROJECT_ROOT.parent / "shared" / "ob-corpus"))


# ------------------------------------------------------------------------------------------ signing


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def sign_jws(payload: dict[str, Any] | bytes, key: rsa.RSAPrivateKey, alg: str = "RS256") -> str:
    header = b64url(json.dumps({"alg": alg}).encode())
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{header}.{b64url(body)}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


# ------------------------------------------------------------------------------------------ baking


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def tiny_png(*extra_chunks: bytes) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(extra_chunks) + idat + png_chunk(b"IEND", b"")


def itxt(text: str, compressed: bool = False, keyword: bytes = b"openbadges") -> bytes:
    raw = text.encode("utf-8")
    if compressed:
        raw = zlib.compress(raw)
    body = keyword + b"\x00" + bytes([1 if compressed else 0, 0]) + b"\x00" + b"\x00" + raw
    return png_chunk(b"iTXt", body)


def text_chunk(text: str, keyword: bytes = b"openbadges") -> bytes:
    return png_chunk(b"tEXt", keyword + b"\x00" + text.encode("latin-1"))


def svg_with(verify: str | None = None, cdata: str | None = None) -> bytes:
    attr = f' verify="{verify}"' if verify is not None else ""
    inner = f"<![CDATA[{cdata}]]>" if cdata is not None else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="http://openbadges.org" '
        'viewBox="0 0 10 10">'
        f"<openbadges:assertion{attr}>{inner}</openbadges:assertion>"
        '<rect width="10" height="10"/></svg>'
    ).encode()


# ------------------------------------------------------------------------------------------ fetching


def json_doc(value: Any, status: int = 200) -> tuple[int, bytes, str]:
    return (status, json.dumps(value).encode(), "application/json")


class CountingFetcher:
    """A MapFetcher that counts requests per URL (thread-safe) and can be slowed down."""

    def __init__(self, mapping: dict[str, tuple[int, bytes, str]], delay: float = 0.0) -> None:
        self.inner = MapFetcher(mapping)
        self.calls: dict[str, int] = {}
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0  # how many fetches ran at the same time, at most
        self._lock = threading.Lock()

    def get(self, url: str) -> FetchedDocument:
        with self._lock:
            self.calls[url] = self.calls.get(url, 0) + 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                threading.Event().wait(self.delay)
            return self.inner.get(url)
        finally:
            with self._lock:
                self.in_flight -= 1
