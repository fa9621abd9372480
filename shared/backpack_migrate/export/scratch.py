"""Scratch SQLite databases, where what outgrows memory goes while an export is read."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

# Up to this many members (or emails, in :func:`iter_learners`) are held in memory; past it they
# move to a SQLite database in a private temporary directory, so memory stays bounded.
IN_MEMORY_ENTRIES = 2048
_BATCH = 1024  # rows written per transaction (and held until then)
_CACHE_KIB = 1024  # SQLite page cache per database
# SQLite has had WITHOUT ROWID tables since 3.8.2 (2013); every Python 3.11 build here bundles a
# later one. A constant, so that sqlite3 loads only when a database is first needed: most chunks
# and small exports never spill.
_WITHOUT_ROWID = " WITHOUT ROWID"


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
        import sqlite3

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
