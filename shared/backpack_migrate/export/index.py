"""The members of an export by name: packed in memory, then in a scratch database."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping

from backpack_migrate.domain import MemberLocation

from . import scratch
from .errors import ExportError
from .ranges import RangeReader
from .scratch import _BATCH, _TempDatabase
from .zipdir import _LOCAL_SIG, _iter_local_rows, _iter_member_rows, _location, _MemberRow

_INDEX = struct.Struct("<QQQIH")
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _signed(value: int) -> int:
    """A 64-bit unsigned value as SQLite's signed INTEGER (ZIP64 sizes may use the top bit)."""
    return value - _U64 if value > _I64_MAX else value


def _unsigned(value: int) -> int:
    return value + _U64 if value < 0 else value


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
        self.memory_entries = scratch.IN_MEMORY_ENTRIES if memory_entries is None else memory_entries
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
