"""The ZIP's own records: the end of central directory, the directory's entries, local headers."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from backpack_migrate.domain import MemberLocation

from ..models import Model
from .errors import ExportError
from .ranges import RangeReader

BLOCK_SIZE = 64 * 1024

_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_EOCD = struct.Struct("<4s4H2LH")  # 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes
_MAX_COMMENT = 0xFFFF


def starts_with_member(reader: RangeReader, name: str) -> bool:
    """A cheap first look: whether the ZIP's first local header names ``name``."""
    head = reader.read(0, _LOCAL.size + len(name.encode()))
    if len(head) < _LOCAL.size or head[:4] != _LOCAL_SIG:
        return False
    name_length = _LOCAL.unpack(head[: _LOCAL.size])[9]
    return head[_LOCAL.size : _LOCAL.size + name_length] == name.encode()


class _Directory(Model):
    start: int  # absolute offset of the first central directory entry
    size: int
    entries: int
    base: int  # bytes prepended before the ZIP (self-extracting archives); added to offsets


def _read_exact(reader: RangeReader, start: int, length: int) -> bytes:
    data = reader.read(start, length) if length else b""
    if len(data) != length:
        raise ExportError("TRUNCATED_ZIP")
    return data


def _starts_like_zip(reader: RangeReader) -> bool:
    return reader.read(0, 4) in {_LOCAL_SIG, _EOCD_SIG, b"PK\x07\x08", b"PK00"}


def _find_directory(reader: RangeReader) -> _Directory:
    size = reader.size
    if size < _EOCD.size:
        raise ExportError("TRUNCATED_ZIP" if size and _starts_like_zip(reader) else "NOT_A_ZIP")
    tail_start = max(0, size - (_MAX_COMMENT + _EOCD.size))
    tail = reader.read(tail_start, size - tail_start)
    if len(tail) != size - tail_start:
        raise ExportError("TRUNCATED_ZIP")
    # Prefer the last signature whose comment length reaches exactly the end of the file.
    candidates: list[int] = []
    pos = tail.rfind(_EOCD_SIG)
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            candidates.append(pos)
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    if not candidates:
        raise ExportError("TRUNCATED_ZIP" if _starts_like_zip(reader) else "NOT_A_ZIP")
    exact = [p for p in candidates if p + _EOCD.size + _EOCD.unpack_from(tail, p)[7] == len(tail)]
    eocd_pos = (exact or candidates)[0]
    (_, disk, cd_disk, _disk_entries, entries, cd_size, cd_offset, _clen) = _EOCD.unpack_from(tail, eocd_pos)
    eocd_abs = tail_start + eocd_pos
    record_end = eocd_abs  # where the central directory (or the ZIP64 record) should end

    locator_abs = eocd_abs - _ZIP64_LOCATOR.size
    locator = reader.read(locator_abs, _ZIP64_LOCATOR.size) if locator_abs >= 0 else b""
    if len(locator) == _ZIP64_LOCATOR.size and locator[:4] == _ZIP64_LOCATOR_SIG:
        _, _l_disk, z64_offset, _disks = _ZIP64_LOCATOR.unpack(locator)
        z64_abs = locator_abs - _ZIP64_EOCD.size  # normal place, right before the locator
        record = reader.read(z64_abs, _ZIP64_EOCD.size) if z64_abs >= 0 else b""
        if len(record) != _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
            # The record may carry an extensible data sector: trust the locator's offset.
            z64_abs = z64_offset
            record = reader.read(z64_abs, _ZIP64_EOCD.size) if z64_abs < size else b""
            if len(record) != _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
                raise ExportError("TRUNCATED_ZIP")
        (_, _rsize, _made, _need, disk, cd_disk, _de, entries, cd_size, cd_offset) = _ZIP64_EOCD.unpack(
            record
        )
        record_end = z64_abs
    elif 0xFFFFFFFF in (cd_size, cd_offset):
        raise ExportError("TRUNCATED_ZIP")
    if disk != 0 or cd_disk != 0:
        raise ExportError(
            "NOT_A_ZIP", "The export is a multi-part ZIP archive; please upload it as one file."
        )
    base = record_end - cd_size - cd_offset
    if base < 0 or cd_size < entries * _CENTRAL.size:
        raise ExportError("TRUNCATED_ZIP")
    return _Directory(start=base + cd_offset, size=cd_size, entries=entries, base=base)


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.decode("cp437")


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        data = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag != 0x0001:
            continue
        values = [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]
        try:
            if usize == 0xFFFFFFFF:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF:
                offset = values.pop(0)
        except IndexError:
            raise ExportError("TRUNCATED_ZIP") from None
        break
    if 0xFFFFFFFF in (usize, csize, offset):
        raise ExportError("TRUNCATED_ZIP")
    return usize, csize, offset


def iter_members(reader: RangeReader, *, block_size: int = BLOCK_SIZE) -> Iterator[MemberLocation]:
    """Yield every file entry of the central directory (directories are skipped), in order.

    The directory is read in blocks of ``block_size`` bytes; nothing but the current block
    is kept. A damaged or cut directory raises :class:`ExportError`.
    """
    for row in _iter_member_rows(reader, block_size=block_size):
        yield _location(*row)


# (name, header offset, compressed size, size, CRC-32, method)
_MemberRow = tuple[str, int, int, int, int, int]


def _location(name: str, header: int, csize: int, size: int, crc: int, method: int) -> MemberLocation:
    return MemberLocation.model_construct(
        name=name, header_offset=header, compressed_size=csize, size=size, method=method, crc=crc
    )


def _iter_member_rows(reader: RangeReader, *, block_size: int = BLOCK_SIZE) -> Iterator[_MemberRow]:
    """:func:`iter_members` as plain tuples (building a model per member is most of its cost)."""
    directory = _find_directory(reader)
    end = directory.start + directory.size
    if end > reader.size:
        raise ExportError("TRUNCATED_ZIP")
    pos = directory.start
    buf = b""
    buf_start = pos
    count = 0
    while pos < end:
        if pos + _CENTRAL.size > buf_start + len(buf):
            buf, buf_start = _refill(
                reader, buf, buf_start, pos, end=end, need=_CENTRAL.size, block_size=block_size
            )
        rel = pos - buf_start
        fields = _CENTRAL.unpack_from(buf, rel)
        (sig, _made, _need, flags, method, _time, _date, crc, csize, usize, nlen, elen, clen) = fields[:13]
        offset = fields[-1]
        if sig != _CENTRAL_SIG:
            raise ExportError("TRUNCATED_ZIP")
        entry_len = _CENTRAL.size + nlen + elen + clen
        if pos + entry_len > end:
            raise ExportError("TRUNCATED_ZIP")
        if pos + entry_len > buf_start + len(buf):
            buf, buf_start = _refill(
                reader, buf, buf_start, pos, end=end, need=entry_len, block_size=block_size
            )
            rel = pos - buf_start
        name_raw = buf[rel + _CENTRAL.size : rel + _CENTRAL.size + nlen]
        extra = buf[rel + _CENTRAL.size + nlen : rel + _CENTRAL.size + nlen + elen]
        pos += entry_len
        count += 1
        if 0xFFFFFFFF in (usize, csize, offset):
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        header = directory.base + offset
        if header + _LOCAL.size > directory.start:
            raise ExportError("TRUNCATED_ZIP")
        name = _decode_name(name_raw, flags)
        if name.endswith("/"):
            continue
        yield name, header, csize, usize, crc, method
    if count != directory.entries and (count & 0xFFFF) != directory.entries:
        raise ExportError("TRUNCATED_ZIP")


_DESCRIPTOR_SIG = b"PK\x07\x08"


def _iter_local_rows(reader: RangeReader) -> Iterator[_MemberRow]:
    """The members of an archive whose central directory (at its end) was cut off, read from
    their local headers in order, up to the cut or a member whose end cannot be found (a stored
    or encrypted member whose sizes only follow its data)."""
    pos = 0
    while True:
        head = reader.read(pos, _LOCAL.size)
        if len(head) < _LOCAL.size or head[:4] != _LOCAL_SIG:
            return
        (_sig, _need, flags, method, _t, _d, crc, csize, usize, nlen, elen) = _LOCAL.unpack(head)
        names = reader.read(pos + _LOCAL.size, nlen + elen)
        if len(names) < nlen + elen:
            return
        if 0xFFFFFFFF in (usize, csize):
            try:
                usize, csize, _ = _zip64_extra(names[nlen:], usize, csize, 0)
            except ExportError:
                return
        start = pos + _LOCAL.size + nlen + elen
        if flags & 0x08:
            # Sizes and CRC follow the data: only a deflated member shows where its data ends,
            # and the descriptor after it must agree with what inflating it gave.
            found = _deflated_extent(reader, start) if method == 8 and not flags & 0x1 else None
            end = _descriptor_end(reader, start, *found) if found else None
            if found is None or end is None:
                return
            csize, usize, crc = found
        else:
            end = start + csize
        if end > reader.size:
            return
        name = _decode_name(names[:nlen], flags)
        if not name.endswith("/"):
            yield name, pos, csize, usize, crc, method
        pos = end


# A data descriptor: CRC-32 and both sizes (4 or 8 bytes each, 8 in zip64), maybe signed.
_DESCRIPTORS = (struct.Struct("<4s3L"), struct.Struct("<3L"), struct.Struct("<4sL2Q"), struct.Struct("<L2Q"))


def _descriptor_end(reader: RangeReader, start: int, csize: int, usize: int, crc: int) -> int | None:
    """Where the data descriptor after a member's data ends: the layout whose values match."""
    after = start + csize
    raw = reader.read(after, 24)
    for layout in _DESCRIPTORS:
        if len(raw) < layout.size:
            continue
        values = layout.unpack_from(raw)
        if len(values) == 4 and values[0] != _DESCRIPTOR_SIG:
            continue
        if tuple(values[-3:]) == (crc, csize, usize):
            return after + layout.size
    return None


def _deflated_extent(reader: RangeReader, start: int) -> tuple[int, int, int] | None:
    """(compressed size, size, CRC-32) of the deflate stream at ``start``, or None if it is cut.

    Output is taken a block at a time and dropped, so a large member or a deflate bomb costs
    time in proportion to its size but never memory.
    """
    inflater = zlib.decompressobj(-15)
    pos, size, crc = start, 0, 0
    while not inflater.eof:
        chunk = reader.read(pos, BLOCK_SIZE // 4)
        if not chunk:
            return None
        pending = chunk
        while pending and not inflater.eof:
            try:
                data = inflater.decompress(pending, BLOCK_SIZE)
            except zlib.error:
                return None
            size += len(data)
            crc = zlib.crc32(data, crc)
            pending = inflater.unconsumed_tail
        pos += len(chunk) - len(inflater.unused_data)
    return pos - start, size, crc


def _refill(
    reader: RangeReader, buf: bytes, buf_start: int, pos: int, *, end: int, need: int, block_size: int
) -> tuple[bytes, int]:
    """Return a buffer starting at ``pos`` holding at least ``need`` bytes (reading ahead a block)."""
    keep = buf[pos - buf_start :] if buf_start <= pos < buf_start + len(buf) else b""
    want = min(max(need, block_size), end - pos) - len(keep)
    more = reader.read(pos + len(keep), want) if want > 0 else b""
    buf = keep + more
    if len(buf) < need:
        raise ExportError("TRUNCATED_ZIP")
    return buf, pos
