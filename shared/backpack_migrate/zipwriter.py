"""A ZIP writer whose memory does not grow with the number of members.

``zipfile.ZipFile`` keeps a ``ZipInfo`` per member until it writes the central directory at
the end: half a million badge images would hold a few hundred MB. This writer appends each
member's central-directory record to a temporary file as soon as the member is written and
copies it out at the end, so only the member being written is in memory. The output is a
standard ZIP (ZIP64 where counts or sizes need it) that ``zipfile`` and every unzip read.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import IO

STORED = 0
DEFLATED = 8
_LIMIT32 = 0xFFFFFFFF
_LIMIT16 = 0xFFFF
_ZIP64_VERSION = 45
_DEFAULT_VERSION = 20
_UTF8_FLAG = 0x800


def _dos_time(stamp: time.struct_time) -> tuple[int, int]:
    date = (max(stamp.tm_year, 1980) - 1980) << 9 | stamp.tm_mon << 5 | stamp.tm_mday
    clock = stamp.tm_hour << 11 | stamp.tm_min << 5 | stamp.tm_sec // 2
    return date, clock


class StreamingZipWriter:
    """Members are written one after another: whole (:meth:`write`) or streamed (:meth:`open`)."""

    def __init__(self, path: Path) -> None:
        self._out: IO[bytes] = Path(path).open("wb")  # noqa: SIM115 - closed by close()
        self._directory: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._count = 0
        self._date, self._clock = _dos_time(time.gmtime())
        self._open = False

    # members ---------------------------------------------------------------------------

    def write(self, name: str, data: bytes, *, compress: bool = True) -> None:
        """One member from bytes in memory."""
        crc = zlib.crc32(data)
        if compress:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = packer.compress(data) + packer.flush()
            method = DEFLATED
        else:
            body, method = data, STORED
        offset = self._out.tell()
        encoded, flags = self._name(name)
        zip64 = len(data) > _LIMIT32 or len(body) > _LIMIT32
        self._out.write(self._local_header(encoded, flags, method, crc, len(body), len(data), zip64=zip64))
        self._out.write(body)
        self._record(encoded, flags, method, crc, len(body), len(data), offset)

    def open(self, name: str) -> _MemberStream:
        """A file-like member, deflated as it is written; its sizes are filled in on close."""
        if self._open:
            raise RuntimeError("one member at a time")
        self._open = True
        return _MemberStream(self, name)

    def close(self) -> None:
        if self._out.closed:
            return
        start = self._out.tell()
        self._directory.seek(0)
        shutil.copyfileobj(self._directory, self._out, 1 << 20)
        self._directory.close()
        end = self._out.tell()
        size = end - start
        count = self._count
        if count > _LIMIT16 or start > _LIMIT32 or size > _LIMIT32:
            self._out.write(
                struct.pack(
                    "<4sQ2H2L4Q",
                    b"PK\x06\x06",
                    44,
                    _ZIP64_VERSION,
                    _ZIP64_VERSION,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
            )
            self._out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1))
        self._out.write(
            struct.pack(
                "<4s4H2LH",
                b"PK\x05\x06",
                0,
                0,
                min(count, _LIMIT16),
                min(count, _LIMIT16),
                min(size, _LIMIT32),
                min(start, _LIMIT32),
                0,
            )
        )
        self._out.close()

    def abort(self) -> None:
        """Close without a valid archive (the caller removes the file)."""
        self._directory.close()
        self._out.close()

    def __enter__(self) -> StreamingZipWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    # records ---------------------------------------------------------------------------

    @staticmethod
    def _name(name: str) -> tuple[bytes, int]:
        try:
            return name.encode("ascii"), 0
        except UnicodeEncodeError:
            return name.encode("utf-8"), _UTF8_FLAG

    def _local_header(
        self, name: bytes, flags: int, method: int, crc: int, packed: int, size: int, *, zip64: bool
    ) -> bytes:
        extra = struct.pack("<2H2Q", 1, 16, size, packed) if zip64 else b""
        version = _ZIP64_VERSION if zip64 else _DEFAULT_VERSION
        sizes = (_LIMIT32, _LIMIT32) if zip64 else (packed, size)
        return (
            struct.pack(
                "<4s2B4HL2L2H",
                b"PK\x03\x04",
                version,
                0,
                flags,
                method,
                self._clock,
                self._date,
                crc,
                *sizes,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def _record(
        self, name: bytes, flags: int, method: int, crc: int, packed: int, size: int, offset: int
    ) -> None:
        # ZIP64 extra field: only the values too large for their 32-bit fields, in this order.
        big = size > _LIMIT32 or packed > _LIMIT32
        wide = [size, packed] if big else []
        if offset > _LIMIT32:
            wide.append(offset)
        extra = struct.pack(f"<2H{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
        version = _ZIP64_VERSION if wide else _DEFAULT_VERSION
        self._directory.write(
            struct.pack(
                "<4s4B4HL2L5H2L",
                b"PK\x01\x02",
                version,
                3,  # made on Unix, so the permissions below are read
                version,
                0,
                flags,
                method,
                self._clock,
                self._date,
                crc,
                _LIMIT32 if big else packed,
                _LIMIT32 if big else size,
                len(name),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                min(offset, _LIMIT32),
            )
            + name
            + extra
        )
        self._count += 1


class _MemberStream:
    """A member being written: deflated on the way, header rewritten with the final sizes."""

    def __init__(self, zip_writer: StreamingZipWriter, name: str) -> None:
        self._zip = zip_writer
        self._name, self._flags = zip_writer._name(name)
        self._offset = zip_writer._out.tell()
        # Always ZIP64 sizes in the local header: the final size is not known yet.
        zip_writer._out.write(
            zip_writer._local_header(self._name, self._flags, DEFLATED, 0, 0, 0, zip64=True)
        )
        self._packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._packed = 0

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._emit(self._packer.compress(data))
        return len(data)

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self._zip._out.write(chunk)
            self._packed += len(chunk)

    def close(self) -> None:
        if self._packer is None:
            return
        self._emit(self._packer.flush())
        self._packer = None  # type: ignore[assignment]
        out = self._zip._out
        end = out.tell()
        out.seek(self._offset)
        out.write(
            self._zip._local_header(
                self._name, self._flags, DEFLATED, self._crc, self._packed, self._size, zip64=True
            )
        )
        out.seek(end)
        self._zip._record(
            self._name, self._flags, DEFLATED, self._crc, self._packed, self._size, self._offset
        )
        self._zip._open = False

    def __enter__(self) -> _MemberStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
