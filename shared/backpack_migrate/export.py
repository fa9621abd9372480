"""Reading a Mozilla Backpack export ZIP by byte range, without holding it in memory.

An export is a ZIP whose root holds ``manifest.txt`` (JSON ``{"<email>": ["<file>", ...]}``)
and the baked badge images it lists. Exports can be gigabytes and list a million learners,
so everything here streams:

- the central directory is read in blocks from the end of the object and yielded entry by entry;
- ``manifest.txt`` is inflated and parsed incrementally, one learner at a time;
- a badge image is read back on its own by two ranged reads (local header, then its data);
- the index of members by name, the marks of which ones the manifest lists and the emails met so
  far stay in memory up to a few thousand entries, then move to a scratch SQLite database in a
  private temporary directory (``/tmp`` on Lambda), removed as soon as the stream ends or fails.

Whole-export failures raise :class:`ExportError` with a stable code; problems with one learner
or one file are reported as :class:`~backpack_migrate.domain.Problem` values.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import tempfile
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, Field

from backpack_migrate.domain import ExportRecord, MemberLocation, Problem, normalize_email

MANIFEST_NAME = "manifest.txt"
# The member a full-fidelity export (``export-db``) writes first: fullexport.FORMAT_MEMBER.
FULL_FORMAT_MEMBER = "format.json"
DEFAULT_MAX_SIZE = 20 * 1024 * 1024
BLOCK_SIZE = 64 * 1024

# One clear sentence per stable code.
MESSAGES: dict[str, str] = {
    # The export as a whole
    "NOT_A_ZIP": "The file is not a ZIP archive, so it cannot be a Mozilla Backpack export.",
    "TRUNCATED_ZIP": "The ZIP archive is cut short or damaged; please upload the complete export again.",
    "NO_MANIFEST": "The ZIP archive has no manifest.txt at its root, so it is not a Mozilla Backpack export.",
    "MANIFEST_NOT_JSON": "The manifest.txt of the export is not valid JSON.",
    "MANIFEST_BAD_SHAPE": "The manifest.txt of the export does not map emails to lists of badge files.",
    "MANIFEST_ENTRY_REFUSED": (
        "This learner's entry in the manifest is not a list of badge file names, "
        "so what it holds instead was not read."
    ),
    "MANIFEST_ENTRIES_REFUSED": (
        "Entries of the manifest without a valid email address were not lists of badge file names, "
        "so they were not read."
    ),
    "EXPORT_CHANGED": "The export file was replaced while it was being read; it will be read again.",
    "EXPORT_GONE": "The export file is no longer in storage.",
    # One learner or one file
    "INVALID_EMAIL": "This entry of the manifest is not a valid email address.",
    "DUPLICATE_EMAIL": "This email address appears more than once in the manifest; its badges were merged.",
    "FILE_MISSING": "The manifest lists this file, but it is not in the ZIP archive.",
    "AMBIGUOUS_FILE": (
        "The ZIP archive holds two different files under this name, so we cannot know which one "
        "was meant; neither was read."
    ),
    "FILE_CUT_OFF": "This file was in the part of the export that was cut off.",
    "ZIP_CUT_SHORT": "The end of the ZIP archive is missing or damaged: the files before it were read.",
    "EMPTY_FILE": "This file is empty.",
    "FILE_TOO_LARGE": "This file is too large to be a badge image.",
    "NOT_AN_IMAGE": "This file is not a PNG or SVG image, so it cannot hold a badge.",
    "UNSUPPORTED_COMPRESSION": "This file is compressed in a way we cannot read.",
    "ENCRYPTED_FILE": "This file is encrypted inside the ZIP archive, so it cannot be read.",
    "CORRUPT_FILE": "This file is damaged inside the ZIP archive.",
}

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


class ExportError(Exception):
    """The export (or one member of it) cannot be read. ``code`` is stable; ``message`` is one sentence."""

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        super().__init__(f"{code}: {self.message}")

    @property
    def problem(self) -> Problem:
        return Problem(code=self.code, message=self.message)


class MemberError(ExportError):
    """One member of the ZIP cannot be read; the rest of the export is fine."""


def problem(code: str, detail: str | None = None) -> Problem:
    """A :class:`Problem` with the standard sentence for ``code`` (plus an optional detail)."""
    message = MESSAGES.get(code, code)
    if detail:
        message = f"{message} ({detail})"
    return Problem(code=code, message=message)


# --------------------------------------------------------------------------------------------
# Range readers


class RangeReader(Protocol):
    """Random access to the bytes of an export: ``read`` may return fewer bytes at the end."""

    @property
    def size(self) -> int: ...

    def read(self, start: int, length: int) -> bytes: ...


class BytesRangeReader:
    """Range reads over bytes already in memory (tests, small uploads)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self.size = len(data)
        self.calls: list[tuple[int, int]] = []  # (start, length) of every read, for tests

    def read(self, start: int, length: int) -> bytes:
        self.calls.append((start, length))
        if start < 0 or length < 0:
            raise ValueError("negative range")
        return bytes(self._data[start : start + length])


class FileRangeReader:
    """Range reads over a local file (command line, benchmarks)."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self._file.seek(0, 2)
        self.size = self._file.tell()

    def read(self, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError("negative range")
        self._file.seek(start)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3RangeReader:
    """Ranged GetObject reads pinned to one version of the object.

    With a ``version_id`` (the bucket is versioned, and S3 events carry it) every read names
    that version, so replacing the object under the same key changes nothing for this reader.
    Without one the reads are pinned by ETag: if the object is replaced while it is read, S3
    answers 412 and :class:`ExportError` ``EXPORT_CHANGED`` is raised.

    Small reads are served from aligned blocks of ``block_size`` bytes, the last
    ``cache_blocks`` of which are kept, so walking the central directory, the manifest and
    neighbouring images costs one request per block.
    """

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        key: str,
        etag: str | None = None,
        *,
        version_id: str | None = None,
        size: int | None = None,
        block_size: int = 256 * 1024,
        cache_blocks: int = 4,
    ) -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self.key = key
        self.block_size = block_size
        self.cache_blocks = max(1, cache_blocks)
        self.requests = 0
        # "null" is the id S3 gives objects written before versioning was turned on.
        self._version = {"VersionId": version_id} if version_id and version_id != "null" else {}
        if size is None or etag is None:
            condition = {"IfMatch": etag} if etag else {}
            head = self._call(self._s3.head_object, Bucket=bucket, Key=key, **self._version, **condition)
            size = int(head["ContentLength"])
            etag = etag or str(head["ETag"])
        self.size = size
        self.etag = etag
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            response = getattr(exc, "response", None)
            if not isinstance(response, dict):
                raise
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in {"PreconditionFailed", "412"} or status == 412:
                raise ExportError("EXPORT_CHANGED") from exc
            if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound"} or status == 404:
                raise ExportError("EXPORT_GONE") from exc
            if code == "AccessDenied" and "exports/" in self.key:
                # The functions may read exports/* but not list the bucket, so S3 answers a
                # missing (expired) export with 403, not 404.
                raise ExportError("EXPORT_GONE") from exc
            raise

    def _get(self, start: int, length: int) -> bytes:
        self.requests += 1
        response = self._call(
            self._s3.get_object,
            Bucket=self.bucket,
            Key=self.key,
            Range=f"bytes={start}-{start + length - 1}",
            IfMatch=self.etag,
            **self._version,
        )
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def _block(self, number: int) -> bytes:
        block = self._blocks.get(number)
        if block is None:
            start = number * self.block_size
            block = self._get(start, min(self.block_size, self.size - start))
            self._blocks[number] = block
            while len(self._blocks) > self.cache_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(number)
        return block

    def read(self, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError("negative range")
        length = min(length, self.size - start)
        if length <= 0:
            return b""
        first, last = start // self.block_size, (start + length - 1) // self.block_size
        if last - first + 1 > 2:  # a large read: fetch it as it is
            return self._get(start, length)
        data = b"".join(self._block(n) for n in range(first, last + 1))
        offset = start - first * self.block_size
        return data[offset : offset + length]


def starts_with_member(reader: RangeReader, name: str) -> bool:
    """A cheap first look: whether the ZIP's first local header names ``name``."""
    head = reader.read(0, _LOCAL.size + len(name.encode()))
    if len(head) < _LOCAL.size or head[:4] != _LOCAL_SIG:
        return False
    name_length = _LOCAL.unpack(head[: _LOCAL.size])[9]
    return head[_LOCAL.size : _LOCAL.size + name_length] == name.encode()


def open_export(svc: Any, export: ExportRecord) -> S3RangeReader:
    """A reader of the export's object in S3, pinned to its version (or ETag)."""
    # S3 events carry the ETag bare; If-Match wants it quoted.
    etag = '"' + export.etag.strip('"') + '"'
    return S3RangeReader(
        svc.s3, export.bucket, export.key, etag=etag, version_id=export.version_id, size=export.size or None
    )


# --------------------------------------------------------------------------------------------
# Central directory


class _Directory(BaseModel):
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


_INDEX = struct.Struct("<QQQIH")

# Up to this many members (or emails, in :func:`iter_learners`) are held in memory; past it they
# move to a SQLite database in a private temporary directory, so memory stays bounded.
IN_MEMORY_ENTRIES = 2048
_BATCH = 1024  # rows written per transaction (and held until then)
_CACHE_KIB = 1024  # SQLite page cache per database
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_WITHOUT_ROWID = " WITHOUT ROWID" if sqlite3.sqlite_version_info >= (3, 8, 2) else ""


def _signed(value: int) -> int:
    """A 64-bit unsigned value as SQLite's signed INTEGER (ZIP64 sizes may use the top bit)."""
    return value - _U64 if value > _I64_MAX else value


def _unsigned(value: int) -> int:
    return value + _U64 if value < 0 else value


_SCRATCH_PREFIX = "backpack-export-"
_OURS: set[str] = set()  # the scratch directories this process made and has not removed yet
_swept = False


def _drop_database(conn: sqlite3.Connection, directory: str) -> None:
    try:
        conn.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        _OURS.discard(directory)


def _sweep_stale_databases() -> None:
    """Remove scratch directories left behind by a process that died (a Lambda timeout keeps /tmp).

    Once per process, best effort: only this user's directories whose process is gone, or that
    carry this process's id without being among its own (the id was reused after a restart).
    Were a live one removed (another pid namespace sharing the directory), its process would not
    notice: SQLite keeps using the file it has open.
    """
    global _swept  # noqa: PLW0603 - once per process
    if _swept:
        return
    _swept = True
    pattern = re.compile(re.escape(_SCRATCH_PREFIX) + r"(\d+)-")
    base = tempfile.gettempdir()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            stale = entry.path not in _OURS
        else:
            try:
                os.kill(pid, 0)
                stale = False
            except ProcessLookupError:
                stale = True
            except OSError:  # alive, another user's
                stale = False
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)


class _TempDatabase:
    """A scratch SQLite database in its own private temporary directory (mode 0700).

    Built for speed, not durability: no journal, no syncs, an exclusive lock and a bounded page
    cache. :meth:`close` (or garbage collection, or interpreter exit) closes the connection and
    removes the directory. One thread at a time: the connection does no locking of its own.
    """

    def __init__(self, schema: str) -> None:
        _sweep_stale_databases()
        self.directory = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
        _OURS.add(self.directory)
        self.path = os.path.join(self.directory, "scratch.sqlite")
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _drop_database, self.conn, self.directory)
        try:
            for pragma in (
                "journal_mode=OFF",
                "synchronous=OFF",
                "locking_mode=EXCLUSIVE",
                "temp_store=FILE",
                f"cache_size=-{_CACHE_KIB}",
            ):
                self.conn.execute(f"PRAGMA {pragma}")
            self.conn.executescript(schema)
        except BaseException:
            self.close()
            raise

    def write(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Run ``sql`` for every row in one transaction; the number of rows changed."""
        if self.conn.in_transaction:
            return self.conn.executemany(sql, rows).rowcount
        self.conn.execute("BEGIN")
        try:
            return self.conn.executemany(sql, rows).rowcount
        finally:
            self.conn.execute("COMMIT")

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()


_MEMBERS_SCHEMA = """
CREATE TABLE members (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    header INTEGER NOT NULL,
    csize INTEGER NOT NULL,
    size INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    method INTEGER NOT NULL,
    listed INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0
);
"""
_INSERT_MEMBER = (
    "INSERT OR IGNORE INTO members (name, header, csize, size, crc, method) VALUES (?, ?, ?, ?, ?, ?)"
)
# The later entry wins; a name whose entries differ in size or CRC becomes ambiguous for good.
_REPLACE_MEMBER = (
    "UPDATE members SET ambiguous = (ambiguous OR size <> ?3 OR crc <> ?4),"
    " header = ?1, csize = ?2, size = ?3, crc = ?4, method = ?5 WHERE name = ?6"
)
_FIND_MEMBER = "SELECT seq, header, csize, size, crc, method, ambiguous FROM members WHERE name = ?"


class MemberIndex(Mapping[str, MemberLocation]):
    """Member name -> location, a read-only mapping whose memory does not grow with the export.

    Up to ``memory_entries`` members are kept in memory, packed (a few dozen bytes each); past
    that, every member moves to a SQLite database in a private temporary directory, filled in
    batched transactions and looked up by name. :meth:`close` (or ``with``) removes the
    database; garbage collection and interpreter exit do too, as a backstop.

    Iteration follows the central directory. When a name appears twice the later entry wins (as
    in ``zipfile``) and keeps the first one's place; when the two differ (in size or CRC) the name
    is :meth:`ambiguous`, since nothing tells which of them a listing meant. Not thread-safe: use
    an index from one thread at a time (intake uses one thread).
    """

    def __init__(self, members: Iterable[MemberLocation] = (), *, memory_entries: int | None = None) -> None:
        self.memory_entries = IN_MEMORY_ENTRIES if memory_entries is None else memory_entries
        self._packed: dict[str, bytes] = {}
        self._ambiguous: set[str] = set()  # while in memory
        self._db: _TempDatabase | None = None
        self._pending: list[_MemberRow] = []
        self._count = 0  # members in the database
        self.cut_short = False  # read from local headers: the archive's end was missing
        self._extend((m.name, m.header_offset, m.compressed_size, m.size, m.crc, m.method) for m in members)

    # ---- building

    def add(self, member: MemberLocation) -> None:
        self._add(
            member.name, member.header_offset, member.compressed_size, member.size, member.crc, member.method
        )

    def _extend(self, rows: Iterable[_MemberRow]) -> None:
        """Add every row; on any failure the index is closed (its database removed) and it re-raises."""
        try:
            for row in rows:
                self._add(*row)
            self._flush()
        except BaseException:
            self.close()
            raise

    def _add(self, name: str, header: int, csize: int, size: int, crc: int, method: int) -> None:
        method &= 0xFFFF
        if self._db is None:
            earlier = self._packed.get(name)
            if earlier is not None:
                _h, _c, earlier_size, earlier_crc, _m = _INDEX.unpack(earlier)
                if (earlier_size, earlier_crc) != (size, crc):
                    self._ambiguous.add(name)
            if len(self._packed) < self.memory_entries or earlier is not None:
                self._packed[name] = _INDEX.pack(header, csize, size, crc, method)
                return
            self._spill()
        self._pending.append((name, _signed(header), _signed(csize), _signed(size), crc, method))
        if len(self._pending) >= _BATCH:
            self._flush()

    def _spill(self) -> None:
        self._db = _TempDatabase(_MEMBERS_SCHEMA)
        packed, self._packed = self._packed, {}
        for name, value in packed.items():
            header, csize, size, crc, method = _INDEX.unpack(value)
            self._pending.append((name, _signed(header), _signed(csize), _signed(size), crc, method))
        self._flush()
        ambiguous, self._ambiguous = self._ambiguous, set()
        if ambiguous:
            self._db.write("UPDATE members SET ambiguous = 1 WHERE name = ?", [(n,) for n in ambiguous])

    def _flush(self) -> None:
        if not self._pending:
            return
        db = self._database()
        rows, self._pending = self._pending, []
        inserted = db.write(_INSERT_MEMBER, rows)
        self._count += inserted
        if inserted < len(rows):  # a name seen before: the later entry wins, in order
            db.write(_REPLACE_MEMBER, [(*row[1:], row[0]) for row in rows])

    def _database(self) -> _TempDatabase:
        if self._db is None or self._db.closed:
            raise ValueError("the member index is closed")
        return self._db

    # ---- state

    @property
    def in_memory(self) -> bool:
        """Whether the members are held in memory (False once they moved to SQLite)."""
        return self._db is None

    @property
    def database_path(self) -> str | None:
        """The SQLite file holding the members, while there is one."""
        return self._db.path if self._db is not None and not self._db.closed else None

    def close(self) -> None:
        """Remove the temporary database, if any. The index cannot be used afterwards."""
        self._pending = []
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> MemberIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- Mapping

    def _find(self, name: object) -> tuple[MemberLocation, int] | None:
        """The location of ``name`` and its row in the database (-1 when in memory)."""
        found = self._find_member(name)
        return None if found is None else (found[0], found[1])

    def _find_member(self, name: object) -> tuple[MemberLocation, int, bool] | None:
        """As :meth:`_find`, and whether the name is ambiguous."""
        if not isinstance(name, str):
            return None
        if self._db is None:
            value = self._packed.get(name)
            if value is None:
                return None
            return _location(name, *_INDEX.unpack(value)), -1, name in self._ambiguous
        self._flush()
        try:
            row = self._database().conn.execute(_FIND_MEMBER, (name,)).fetchone()
        except UnicodeEncodeError:  # lone surrogates: no directory name has them
            return None
        if row is None:
            return None
        seq, header, csize, size, crc, method, ambiguous = row
        location = _location(name, _unsigned(header), _unsigned(csize), _unsigned(size), crc, method)
        return location, seq, bool(ambiguous)

    def ambiguous(self, name: str) -> bool:
        """Whether the ZIP holds two different members called ``name``."""
        found = self._find_member(name)
        return found is not None and found[2]

    def __getitem__(self, name: str) -> MemberLocation:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        return found[0]

    def __contains__(self, name: object) -> bool:
        return self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        if self._db is None:
            yield from self._packed
            return
        self._flush()
        for (name,) in self._database().conn.execute("SELECT name FROM members ORDER BY seq"):
            yield name

    def __len__(self) -> int:
        if self._db is None:
            return len(self._packed)
        self._flush()
        return self._count


def member_index(reader: RangeReader, *, memory_entries: int | None = None) -> MemberIndex:
    """Every file member of the export by name (a read-only mapping; close it when done).

    An archive cut short has lost its central directory, which ZIP keeps at the end: its members
    are then read from their local headers up to the cut, and the index says it is ``cut_short``.
    """
    index = MemberIndex(memory_entries=memory_entries)
    try:
        index._extend(_iter_member_rows(reader))
    except ExportError as error:
        index.close()
        if error.code != "TRUNCATED_ZIP" or reader.read(0, 4) != _LOCAL_SIG:
            raise
        index = MemberIndex(memory_entries=memory_entries)
        index.cut_short = True
        index._extend(_iter_local_rows(reader))
    return index


# --------------------------------------------------------------------------------------------
# Members


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


# --------------------------------------------------------------------------------------------
# Manifest

_WS = re.compile(r"[ \t\n\r]*")
_MAX_TOKEN = 64 * 1024  # characters in one email or file name
_MAX_SKIPPED_DEPTH = 256  # nesting of a value skipped over as not a list of file names
_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_LITERAL_RUN = re.compile(r"[-+.0-9a-zA-Z]*")
_JSON_KINDS = {
    "{": "an object",
    "[": "a list",
    '"': "a string",
    "t": "a boolean",
    "f": "a boolean",
    "n": "null",
}


def _kind(ch: str) -> str | None:
    if ch in _JSON_KINDS:
        return _JSON_KINDS[ch]
    if ch == "-" or ch.isdigit():
        return "a number"
    return None


def _manifest_text(reader: RangeReader, loc: MemberLocation, block_size: int) -> Iterator[str]:
    """The manifest's text in pieces: ranged reads, inflated and decoded incrementally, CRC-checked."""
    if loc.method not in (0, 8):
        raise ExportError(
            "MANIFEST_NOT_JSON", "The manifest.txt of the export is compressed in a way we cannot read."
        )
    start, _flags = _data_offset(reader, loc, member_errors=False)
    end = start + loc.compressed_size
    inflater = zlib.decompressobj(-15) if loc.method == 8 else None
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    crc = 0
    produced = 0
    pos = start
    pending = b""
    cap = block_size * 4  # most text produced from one piece of input
    while True:
        if inflater is not None and pending:
            feed, pending = pending, b""
        elif pos < end and not (inflater is not None and inflater.eof):
            feed = reader.read(pos, min(block_size, end - pos))
            if not feed:
                raise ExportError("TRUNCATED_ZIP")
            pos += len(feed)
        elif inflater is not None and not inflater.eof:
            feed = b""  # output may still be pending inside the inflater
        else:
            break
        if inflater is None:
            data = feed
        else:
            try:
                data = inflater.decompress(feed, cap)
            except zlib.error:
                raise ExportError("TRUNCATED_ZIP") from None
            pending = inflater.unconsumed_tail
            if not feed and not data:
                break
        produced += len(data)
        if produced > loc.size:
            raise ExportError("TRUNCATED_ZIP")
        crc = zlib.crc32(data, crc)
        try:
            text = decoder.decode(data)
        except UnicodeDecodeError:
            raise ExportError(
                "MANIFEST_NOT_JSON", "The manifest.txt of the export is not UTF-8 text."
            ) from None
        if text:
            yield text
    if produced != loc.size or crc != loc.crc:
        raise ExportError("TRUNCATED_ZIP")
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ExportError("MANIFEST_NOT_JSON", "The manifest.txt of the export is not UTF-8 text.") from None
    if tail:
        yield tail


class _Scanner:
    """A sliding text buffer over the manifest pieces, holding at most one token plus one block."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        piece = next(self._pieces, None)
        if piece is None:
            self.eof = True
            return False
        if self.pos:
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += piece
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the text)."""
        while True:
            match = _WS.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, allowed: str, where: str, *, value: bool = False) -> str:
        """Consume one of ``allowed``; at a value position other JSON is a shape error."""
        ch = self.peek()
        if ch and ch in allowed:
            self.pos += 1
            return ch
        if value or not ch:
            raise self._unexpected(ch, where)
        raise ExportError("MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where}).")

    def _unexpected(self, ch: str, where: str) -> ExportError:
        if not ch:
            return ExportError(
                "MANIFEST_NOT_JSON", f"The manifest.txt of the export ends too early ({where})."
            )
        kind = _kind(ch)
        if kind is None or ch in ",:]}":
            return ExportError(
                "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
            )
        return ExportError("MANIFEST_BAD_SHAPE", f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where}, found {kind})")

    def string(self, where: str, *, is_key: bool = False) -> str:
        ch = self.peek()
        if ch != '"':
            if is_key and ch:
                raise ExportError(
                    "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
                )
            raise self._unexpected(ch, where)
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                incomplete = exc.msg.startswith("Unterminated") or exc.pos >= len(self.buf) - 6
                if not incomplete or self.eof:
                    raise ExportError(
                        "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
                    ) from None
                if len(self.buf) - self.pos > _MAX_TOKEN:
                    raise ExportError(
                        "MANIFEST_BAD_SHAPE",
                        f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where} is longer than {_MAX_TOKEN} characters)",
                    ) from None
                self._more()
                continue
            self.pos = end
            assert isinstance(value, str)
            return value

    def literal(self, where: str) -> None:
        """Consume a number, ``true``, ``false`` or ``null``."""
        while True:
            # The whole run of literal characters must be in the buffer before it is judged.
            run = _LITERAL_RUN.match(self.buf, self.pos)
            end = run.end() if run else self.pos
            if end < len(self.buf) or self.eof:
                if _LITERAL.fullmatch(self.buf, self.pos, end):
                    self.pos = end
                    return
                break
            if end - self.pos > _MAX_TOKEN or not self._more():
                if self.eof and _LITERAL.fullmatch(self.buf, self.pos, len(self.buf)):
                    self.pos = len(self.buf)
                    return
                break
        raise ExportError("MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where}).")

    def skip_value(self, where: str) -> str:
        """Consume one JSON value of any shape, checking it is JSON; returns what kind it was."""
        kind = _kind(self.peek())
        if kind is None or self.peek() in ",:]}":
            raise self._unexpected(self.peek(), where)
        open_containers: list[str] = []  # the closing character of each container we are in
        want_value = True
        while True:
            if want_value:
                ch = self.peek()
                if ch in ("{", "["):
                    self.pos += 1
                    if len(open_containers) >= _MAX_SKIPPED_DEPTH:
                        raise ExportError(
                            "MANIFEST_BAD_SHAPE",
                            f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where}, nested too deeply)",
                        )
                    close = "}" if ch == "{" else "]"
                    open_containers.append(close)
                    if self.peek() == close:
                        self.pos += 1
                        open_containers.pop()
                        want_value = False
                    elif close == "}":
                        self.string(where, is_key=True)
                        self.expect(":", where)
                    continue
                if ch == '"':
                    self.string(where)
                elif _kind(ch) is not None:
                    self.literal(where)
                else:
                    self.expect("", where)  # raises: not JSON, or ends too early
                want_value = False
            if not open_containers:
                return kind or "a value"
            close = open_containers[-1]
            if self.expect("," + close, where) == close:
                open_containers.pop()
                continue
            if close == "}":
                self.string(where, is_key=True)
                self.expect(":", where)
            want_value = True


class ManifestEntry(NamedTuple):
    """One key of the manifest: the email as written (stripped), its file names, and what in its
    value was not a file name (one sentence-part each, empty for a well-formed entry)."""

    email: str
    files: list[str]
    refused: list[str] = []


def iter_manifest(
    reader: RangeReader,
    location: MemberLocation,
    *,
    block_size: int = BLOCK_SIZE,
    max_files_per_learner: int = 100_000,
) -> Iterator[ManifestEntry]:
    """Yield a :class:`ManifestEntry` for every key of ``manifest.txt``, in order, parsing as it reads.

    Memory stays bounded by one block plus one learner's entry. The email is only stripped
    of surrounding whitespace; duplicate keys are yielded as they come. A manifest that is not
    JSON raises ``MANIFEST_NOT_JSON``; one that is not a JSON object raises ``MANIFEST_BAD_SHAPE``.
    A value that is not a list of file names (a string, a number, an object, null) costs only its
    own entry: it is skipped and named in ``refused``, and so is each item of a list that is not a
    file name, so one bad entry never fails the learners around it.
    """
    scan = _Scanner(_manifest_text(reader, location, block_size))
    ch = scan.peek()
    if ch == "":
        raise ExportError("MANIFEST_NOT_JSON", "The manifest.txt of the export is empty.")
    scan.expect("{", "the manifest must be one JSON object", value=True)
    index = 0
    if scan.peek() == "}":
        scan.pos += 1
    else:
        while True:
            index += 1
            email = scan.string(f"key #{index} must be an email string", is_key=True)
            scan.expect(":", f"after key #{index}")
            files: list[str] = []
            refused: list[str] = []
            where = f"the value of key #{index}"
            if scan.peek() != "[":
                refused.append(f"its value is {scan.skip_value(where)}, not a list of file names")
            elif scan.expect("[", where) and scan.peek() == "]":
                scan.pos += 1
            else:
                while True:
                    if scan.peek() == '"':
                        files.append(scan.string(f"the list of key #{index}"))
                    else:
                        kind = scan.skip_value(f"the list of key #{index}")
                        refused.append(f"its list holds {kind} where a file name should be")
                    if len(files) + len(refused) > max_files_per_learner:
                        raise ExportError(
                            "MANIFEST_BAD_SHAPE",
                            f"{MESSAGES['MANIFEST_BAD_SHAPE']} (key #{index} lists more than "
                            f"{max_files_per_learner} files)",
                        )
                    if scan.expect(",]", f"in the list of key #{index}") == "]":
                        break
            yield ManifestEntry(email.strip(), files, refused)
            if scan.expect(",}", f"after the value of key #{index}") == "}":
                break
    if scan.peek() != "":
        raise ExportError(
            "MANIFEST_NOT_JSON", "The manifest.txt of the export has text after its JSON object."
        )


def find_manifest(reader: RangeReader) -> tuple[MemberLocation, MemberIndex]:
    """The manifest's location and the index of all members (one walk of the central directory).

    The caller owns the index: close it (or use it in a ``with``) to remove its temporary database.
    """
    index = member_index(reader)
    manifest = index.get(MANIFEST_NAME)
    if manifest is None:
        index.close()
        raise ExportError("TRUNCATED_ZIP" if index.cut_short else "NO_MANIFEST")
    return manifest, index


# --------------------------------------------------------------------------------------------
# Joining the manifest with the members

_EMAIL = re.compile(r"\A[^@\s<>\"(),;:\[\]\\]+@[^@\s<>\"(),;:\[\]\\]+\.[^@\s<>\"(),;:\[\]\\.]+\Z")


def is_valid_email(email: str) -> bool:
    return len(email) <= 254 and bool(_EMAIL.match(email))


class FileEntry(BaseModel):
    name: str
    location: MemberLocation | None = None
    problem: Problem | None = None


class LearnerEntry(BaseModel):
    email: str  # as written in the manifest (stripped)
    normalized_email: str
    files: list[FileEntry] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    duplicate: bool = False  # an earlier entry had the same normalized email (streaming mode)
    position: int = 0  # 1-based place in the manifest, so an operator can find the entry


class PlanStats(BaseModel):
    """Counts filled while :func:`iter_learners` runs; complete once it is exhausted."""

    members: int = 0  # files in the ZIP, manifest excluded
    learners: int = 0  # manifest entries
    distinct_learners: int = 0
    listed_files: int = 0
    usable_files: int = 0  # listed, present, and no problem found
    file_problems: dict[str, int] = Field(default_factory=dict)
    learner_problems: dict[str, int] = Field(default_factory=dict)
    unlisted_members: int = 0  # files in the ZIP no learner lists
    cut_short: bool = False  # the archive's end was missing: files past the cut are FILE_CUT_OFF
    unlisted_examples: list[str] = Field(default_factory=list)
    # Manifest entries whose email is not valid and whose value was not (only) file names: said
    # on the export's report, since there is no learner to say it to.
    refused_entries: int = 0
    refused_examples: list[str] = Field(default_factory=list)


# (file name, its member, the learner's email as listed) -> (a refusal of this listing, a note
# for the learner): a check one listing cannot make alone, such as whose a shared file is.
ListingReview = Callable[[str, MemberLocation, str], tuple[Problem | None, Problem | None]]


class ExportPlan(BaseModel):
    manifest: MemberLocation
    learners: list[LearnerEntry]
    stats: PlanStats


def _file_entry(
    reader: RangeReader,
    name: str,
    loc: MemberLocation | None,
    *,
    sniff: bool,
    max_size: int,
    cut_short: bool = False,
) -> FileEntry:
    if loc is None:
        return FileEntry(name=name, problem=problem("FILE_CUT_OFF" if cut_short else "FILE_MISSING"))
    if loc.size == 0:
        return FileEntry(name=name, location=loc, problem=problem("EMPTY_FILE"))
    if loc.size > max_size:
        return FileEntry(name=name, location=loc, problem=problem("FILE_TOO_LARGE"))
    if loc.method not in (0, 8):
        return FileEntry(name=name, location=loc, problem=problem("UNSUPPORTED_COMPRESSION"))
    if sniff:
        try:
            head = read_member_head(reader, loc)
        except MemberError as exc:
            return FileEntry(name=name, location=loc, problem=exc.problem)
        if sniff_media_type(head) is None:
            return FileEntry(name=name, location=loc, problem=problem("NOT_AN_IMAGE"))
    return FileEntry(name=name, location=loc)


_UNLISTED_EXAMPLES = 20


class _Listing:
    """Which members the manifest lists, to count the unlisted ones at the end.

    For an index in SQLite the mark is a column of the members table, set in batches; otherwise
    (a small index in memory, or any other mapping) it is a set of names.
    """

    def __init__(self, index: Mapping[str, MemberLocation]) -> None:
        self._index = index
        self._members = index if isinstance(index, MemberIndex) else None
        self._db = index._db if isinstance(index, MemberIndex) else None
        self._names: set[str] = set()
        self._marks: list[tuple[int]] = []
        if self._db is not None:  # an index may be joined more than once
            self._database().conn.execute("UPDATE members SET listed = 0 WHERE listed <> 0")

    def _database(self) -> _TempDatabase:
        assert self._members is not None
        return self._members._database()

    def find(self, name: str) -> tuple[MemberLocation | None, int, bool]:
        """The member called ``name`` (None if there is none), its row (-1 if not in SQLite), and
        whether two different members carry that name."""
        if name == MANIFEST_NAME:
            return None, -1, False
        if self._members is None:
            return self._index.get(name), -1, False
        return self._members._find_member(name) or (None, -1, False)

    def mark(self, name: str, row: int) -> None:
        if row < 0:
            self._names.add(name)
            return
        self._marks.append((row,))
        if len(self._marks) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._marks:
            marks, self._marks = self._marks, []
            self._database().write("UPDATE members SET listed = 1 WHERE seq = ?", marks)

    def unlisted(self) -> tuple[int, list[str]]:
        """How many members (the manifest excepted) no learner lists, and the first few of them."""
        if self._db is None:
            count = 0
            examples: list[str] = []
            for name in self._index:
                if name != MANIFEST_NAME and name not in self._names:
                    count += 1
                    if len(examples) < _UNLISTED_EXAMPLES:
                        examples.append(name)
            return count, examples
        self._flush()
        conn = self._database().conn
        (count,) = conn.execute(
            "SELECT count(*) FROM members WHERE listed = 0 AND name <> ?", (MANIFEST_NAME,)
        ).fetchone()
        rows = conn.execute(
            "SELECT name FROM members WHERE listed = 0 AND name <> ? ORDER BY seq LIMIT ?",
            (MANIFEST_NAME, _UNLISTED_EXAMPLES),
        )
        return int(count), [name for (name,) in rows]


_SEEN_SCHEMA = f"CREATE TABLE seen (digest BLOB PRIMARY KEY){_WITHOUT_ROWID};"


class _SeenEmails:
    """The normalized emails met so far, as keyed digests: in memory, then in SQLite.

    Past ``memory_entries`` emails the digests move to a temporary database keyed by digest. The
    digest key is random per run, so the scratch file holds nothing that can be matched to an email.
    """

    def __init__(self, memory_entries: int) -> None:
        self._limit = memory_entries
        self._key = os.urandom(16)
        self._memory: set[bytes] = set()
        self._db: _TempDatabase | None = None
        self._uncommitted = 0

    def add(self, normalized: str) -> bool:
        """Remember an email; False if it was met before."""
        digest = hashlib.blake2b(
            normalized.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key
        ).digest()
        if self._db is None:
            if digest in self._memory:
                return False
            if len(self._memory) < self._limit:
                self._memory.add(digest)
                return True
            self._db = _TempDatabase(_SEEN_SCHEMA)
            self._db.write("INSERT INTO seen (digest) VALUES (?)", [(d,) for d in self._memory])
            self._memory = set()
        conn = self._db.conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
        new = conn.execute("INSERT OR IGNORE INTO seen (digest) VALUES (?)", (digest,)).rowcount == 1
        self._uncommitted += 1
        if self._uncommitted >= _BATCH:
            conn.execute("COMMIT")
            self._uncommitted = 0
        return new

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def iter_learners(
    reader: RangeReader,
    *,
    index: MemberIndex | None = None,
    sniff: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    stats: PlanStats | None = None,
    review: ListingReview | None = None,
) -> Iterator[LearnerEntry]:
    """Stream the manifest joined with the members, one :class:`LearnerEntry` per manifest key.

    A key whose normalized email was seen before is yielded again with ``duplicate=True`` and a
    ``DUPLICATE_EMAIL`` problem: the caller merges it into the learner with the same id. With
    ``sniff`` each listed file's first bytes are read to check it is a PNG or SVG (one ranged
    read per file). ``stats`` is filled as the stream goes and is complete at its end. ``review``
    is asked about every listing of a present file that has no problem of its own.

    Memory does not grow with the export: the member index, the listed marks and the emails met
    so far go to temporary SQLite databases past :data:`IN_MEMORY_ENTRIES` entries. Those are
    removed when the stream ends, fails or is closed; an ``index`` passed in stays open (its
    owner closes it). One thread consumes a stream.
    """
    own_index = index is None
    if index is None:
        manifest, index = find_manifest(reader)
    elif MANIFEST_NAME in index:
        manifest = index[MANIFEST_NAME]
    else:
        raise ExportError("NO_MANIFEST")
    seen: _SeenEmails | None = None
    try:
        stats = stats if stats is not None else PlanStats()
        stats.members = len(index) - 1
        stats.cut_short = index.cut_short
        listing = _Listing(index)
        seen = _SeenEmails(IN_MEMORY_ENTRIES)
        for position, (email, names, refused) in enumerate(iter_manifest(reader, manifest), start=1):
            normalized = normalize_email(email)
            entry = LearnerEntry(email=email, normalized_email=normalized, position=position)
            valid_email = is_valid_email(email)
            if not valid_email:
                entry.problems.append(problem("INVALID_EMAIL"))
            if refused:
                detail = "; ".join(dict.fromkeys(refused))
                entry.problems.append(problem("MANIFEST_ENTRY_REFUSED", detail))
                if not valid_email:
                    stats.refused_entries += 1
                    if len(stats.refused_examples) < _UNLISTED_EXAMPLES:
                        stats.refused_examples.append(f"entry #{position}: {detail}")
            if seen.add(normalized):
                stats.distinct_learners += 1
            else:
                entry.duplicate = True
                entry.problems.append(problem("DUPLICATE_EMAIL"))
            local: set[str] = set()
            for name in names:
                if name in local:
                    continue
                local.add(name)
                loc, row, ambiguous = listing.find(name)
                if ambiguous:
                    # Two different files under one name: reading either could be the wrong one.
                    file_entry = FileEntry(name=name, problem=problem("AMBIGUOUS_FILE"))
                else:
                    file_entry = _file_entry(
                        reader, name, loc, sniff=sniff, max_size=max_size, cut_short=index.cut_short
                    )
                if review is not None and loc is not None and file_entry.problem is None:
                    refusal, note = review(name, loc, email)
                    if refusal is not None:  # someone else's badge: never read for this learner
                        file_entry = FileEntry(name=name, problem=refusal)
                    if note is not None and note not in entry.problems:
                        entry.problems.append(note)
                entry.files.append(file_entry)
                stats.listed_files += 1
                if loc is not None:
                    listing.mark(name, row)
                if file_entry.problem is None:
                    stats.usable_files += 1
                else:
                    code = file_entry.problem.code
                    stats.file_problems[code] = stats.file_problems.get(code, 0) + 1
            for learner_problem in entry.problems:
                code = learner_problem.code
                stats.learner_problems[code] = stats.learner_problems.get(code, 0) + 1
            stats.learners += 1
            yield entry
        stats.unlisted_members, stats.unlisted_examples = listing.unlisted()
    finally:
        if seen is not None:
            seen.close()
        if own_index:
            index.close()


def plan_export(reader: RangeReader, *, sniff: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> ExportPlan:
    """The whole plan in memory, duplicate emails merged into their first entry (small exports, CLI)."""
    stats = PlanStats()
    learners: list[LearnerEntry] = []
    by_email: dict[str, LearnerEntry] = {}
    manifest, index = find_manifest(reader)
    with index:
        for entry in iter_learners(reader, index=index, sniff=sniff, max_size=max_size, stats=stats):
            first = by_email.get(entry.normalized_email)
            if first is None:
                by_email[entry.normalized_email] = entry
                learners.append(entry)
                continue
            names = {f.name for f in first.files}
            first.files.extend(f for f in entry.files if f.name not in names)
            for p in entry.problems:
                if p not in first.problems:
                    first.problems.append(p)
    return ExportPlan(manifest=manifest, learners=learners, stats=stats)
