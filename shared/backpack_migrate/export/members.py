"""One member's bytes, read back on its own by two ranged reads, and what kind of image it is."""

from __future__ import annotations

import codecs
import re
import zlib

from backpack_migrate.domain import MemberLocation

from .errors import MESSAGES, ExportError, MemberError
from .ranges import RangeReader
from .zipdir import _LOCAL, _LOCAL_SIG, BLOCK_SIZE

DEFAULT_MAX_SIZE = 20 * 1024 * 1024


def _data_offset(reader: RangeReader, loc: MemberLocation, *, member_errors: bool = True) -> tuple[int, int]:
    """Absolute offset of the member's data and its general-purpose flags, from its local header."""
    error = MemberError if member_errors else ExportError
    header = reader.read(loc.header_offset, _LOCAL.size)
    if len(header) != _LOCAL.size:
        raise error("TRUNCATED_ZIP")
    (sig, _need, flags, _method, _t, _d, _crc, _cs, _us, nlen, elen) = _LOCAL.unpack(header)
    if sig != _LOCAL_SIG:
        raise error("CORRUPT_FILE", f"{MESSAGES['CORRUPT_FILE']} (no local header for {loc.name!r})")
    if flags & 0x1:
        raise error("ENCRYPTED_FILE")
    start = loc.header_offset + _LOCAL.size + nlen + elen
    if start + loc.compressed_size > reader.size:
        raise error("TRUNCATED_ZIP")
    return start, flags


def read_member(reader: RangeReader, loc: MemberLocation, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The uncompressed bytes of one member, CRC-checked. Raises :class:`MemberError`."""
    if loc.size > max_size:
        raise MemberError("FILE_TOO_LARGE", f"{MESSAGES['FILE_TOO_LARGE']} (more than {max_size} bytes)")
    if loc.method not in (0, 8):
        raise MemberError("UNSUPPORTED_COMPRESSION")
    if loc.compressed_size > max_size + 1024 + max_size // 100:
        raise MemberError("FILE_TOO_LARGE", f"{MESSAGES['FILE_TOO_LARGE']} (more than {max_size} bytes)")
    start, _flags = _data_offset(reader, loc)
    raw = reader.read(start, loc.compressed_size) if loc.compressed_size else b""
    if len(raw) != loc.compressed_size:
        raise MemberError("TRUNCATED_ZIP")
    if loc.method == 0:
        data = raw
    else:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, loc.size + 1)
        except zlib.error:
            raise MemberError("CORRUPT_FILE") from None
        if not inflater.eof and len(data) <= loc.size:
            raise MemberError("CORRUPT_FILE")
    if len(data) != loc.size or zlib.crc32(data) != loc.crc:
        raise MemberError("CORRUPT_FILE")
    return data


def read_member_head(reader: RangeReader, loc: MemberLocation, length: int = 1024) -> bytes:
    """The first ``length`` uncompressed bytes of a member (for sniffing), without reading it all."""
    if loc.method not in (0, 8):
        raise MemberError("UNSUPPORTED_COMPRESSION")
    start, _flags = _data_offset(reader, loc)
    if loc.method == 0:
        return reader.read(start, min(length, loc.compressed_size))
    inflater = zlib.decompressobj(-15)
    out = b""
    pos, end = start, start + loc.compressed_size
    while len(out) < length and pos < end:
        chunk = reader.read(pos, min(BLOCK_SIZE // 4, end - pos))
        if not chunk:
            break
        pos += len(chunk)
        try:
            out += inflater.decompress(chunk, length - len(out))
        except zlib.error:
            raise MemberError("CORRUPT_FILE") from None
        if inflater.eof:
            break
    return out[:length]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SVG_ROOT = re.compile(
    r"\A\s*(?:<\?xml[^>]*\?>\s*)?"
    r"(?:<!--.*?-->\s*|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>\s*|<\?[^>]*\?>\s*)*"
    r"<(?:[A-Za-z_][\w.-]*:)?svg[\s/>]",
    re.DOTALL,
)


def sniff_media_type(data: bytes) -> str | None:
    """``image/png`` or ``image/svg+xml`` from the first bytes of a file, else None."""
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    head = data[:4096]
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
        text = head.decode("utf-8", "ignore")
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = head.decode("utf-16", "ignore")
    else:
        text = head.decode("utf-8", "ignore")
    if _SVG_ROOT.match(text):
        return "image/svg+xml"
    return None


def read_badge_image(
    reader: RangeReader, loc: MemberLocation, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[bytes, str]:
    """A listed badge file's bytes and media type, or :class:`MemberError` saying why it is unusable."""
    if loc.size == 0:
        raise MemberError("EMPTY_FILE")
    data = read_member(reader, loc, max_size)
    media_type = sniff_media_type(data)
    if media_type is None:
        raise MemberError("NOT_AN_IMAGE")
    return data, media_type
