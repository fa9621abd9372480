"""Reading the Backpack's own MySQL/MariaDB database, table by table, with flat memory.

Rows arrive through PyMySQL's unbuffered cursor (``SSCursor``): one row in memory at a time,
whatever the table's size. Only the columns the export needs are ever selected, so no secret
column (passwords, salts, verification, reset and delete codes, Facebook tokens) is read at
all; Backpack Connect tokens are read only to be digested at once.

PyMySQL is imported here only, and only the operator's command line imports this module: the
Lambda functions never carry it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# What the export reads, table by table. A database lacking any of these is not the Backpack's.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": (
        "id",
        "first_name",
        "last_name",
        "email",
        "email_is_verified",
        "additional_email_1",
        "additional_email_1_is_verified",
        "additional_email_2",
        "additional_email_2_is_verified",
        "created_at",
        "updated_at",
        "active",
    ),
    "badge": (
        "id",
        "user_id",
        "awarded_to_email_address",
        "endpoint",
        "signature",
        "body",
        "body_hash",
        "validated_on",
        "public_path",
        "public",
    ),
    "badge_image": ("id", "badge_hash", "image_data"),
    "group": ("id", "user_id", "name", "url", "public", "badges"),
    "portfolio": ("id", "group_id", "url", "title", "subtitle", "preamble", "stories"),
    "bpc_session": ("id", "user_id", "access_time", "access_token", "refresh_token", "permissions", "origin"),
}

# A user is left out when `active` is 0; NULL (never set) counts as active, as the Backpack did.
_ACTIVE = "(u.active IS NULL OR u.active <> 0)"

_EMAIL_FIELDS = (
    ("email", "email_is_verified"),
    ("additional_email_1", "additional_email_1_is_verified"),
    ("additional_email_2", "additional_email_2_is_verified"),
)


class DatabaseError(Exception):
    """The database cannot be used; the message is one line for the operator (no password)."""


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the Backpack's database is, from ``mysql://USER:PASS@HOST:PORT/DB[?unix_socket=PATH]``."""

    database: str
    user: str = "root"
    password: str = ""
    host: str = "localhost"
    port: int = 3306
    unix_socket: str | None = None

    @classmethod
    def from_url(cls, url: str) -> DatabaseTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb"):
            raise DatabaseError("the database URL must look like mysql://USER:PASS@HOST:PORT/DB")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise DatabaseError("the database URL names no database (mysql://USER:PASS@HOST:PORT/DB)")
        try:
            port = parts.port or 3306
        except ValueError:
            raise DatabaseError("the database URL's port is not a number") from None
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"unix_socket"})
        if unknown:
            raise DatabaseError(f"unknown database URL parameter(s): {', '.join(unknown)} (only unix_socket)")
        socket = query.get("unix_socket", [None])[-1]
        return cls(
            database=database,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            host=parts.hostname or "localhost",
            port=port,
            unix_socket=socket,
        )

    def describe(self) -> str:
        """Where, for messages: never the password."""
        place = f"socket {self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"
        return f"database {self.database!r} as {self.user!r} on {place}"


# MySQL client and server error numbers that mean "this input is unusable".
_CANNOT_CONNECT = {2002, 2003, 2005, 2006, 2013}
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049


class BackpackDatabase:
    """An open connection to the Backpack's database; rows come out streamed."""

    def __init__(self, target: DatabaseTarget, *, connect_timeout: int = 10) -> None:
        self.target = target
        self._timeout = connect_timeout
        self._stream = self._connect()
        # A second connection answers small look-ups while the first one is streaming a table.
        self._lookup = self._connect()

    def _connect(self) -> Any:
        import pymysql

        try:
            connection = pymysql.connect(
                host=self.target.host,
                port=self.target.port,
                user=self.target.user,
                password=self.target.password,
                database=self.target.database,
                unix_socket=self.target.unix_socket,
                charset="utf8mb4",
                connect_timeout=self._timeout,
                autocommit=True,
            )
        except pymysql.err.MySQLError as error:
            raise DatabaseError(_explain(error, self.target)) from None
        with connection.cursor() as cursor:
            # Timestamps in UTC; a long table scan must not be cut by the server's idle timers.
            cursor.execute("SET time_zone = '+00:00', SESSION net_write_timeout = 3600")
        return connection

    def close(self) -> None:
        for connection in (self._stream, self._lookup):
            with contextlib.suppress(Exception):  # a dead connection has nothing left to say
                connection.close()

    def __enter__(self) -> BackpackDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the schema ------------------------------------------------------------------------

    def check_schema(self) -> None:
        """Refuse a database that is not the Backpack's, naming what is missing."""
        present: dict[str, set[str]] = {}
        for table, column in self.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = DATABASE()"
        ):
            present.setdefault(str(table), set()).add(str(column))
        missing_tables = [t for t in REQUIRED_COLUMNS if t not in present]
        missing_columns = [
            f"{t}.{c}"
            for t, columns in REQUIRED_COLUMNS.items()
            if t in present
            for c in columns
            if c not in present[t]
        ]
        if missing_tables or missing_columns:
            said = []
            if missing_tables:
                said.append("missing table(s) " + ", ".join(missing_tables))
            if missing_columns:
                said.append("missing column(s) " + ", ".join(missing_columns))
            raise DatabaseError(f"{self.target.database!r} is not the Backpack's database: {'; '.join(said)}")

    # reading ---------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A small query on the look-up connection, fully read."""
        import pymysql

        try:
            with self._lookup.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        except pymysql.err.MySQLError as error:
            raise DatabaseError(_explain(error, self.target)) from None

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM `{table}`")[0][0])

    def stream(self, sql: str) -> Iterator[dict[str, Any]]:
        """Every row of one query, one at a time, as a dict (unbuffered: flat memory)."""
        import pymysql
        import pymysql.cursors

        cursor = self._stream.cursor(pymysql.cursors.SSDictCursor)
        try:
            cursor.execute(sql)
            while True:
                row = cursor.fetchone()
                if row is None:
                    return
                yield row
        except pymysql.err.MySQLError as error:
            raise DatabaseError(_explain(error, self.target)) from None
        finally:
            with contextlib.suppress(pymysql.err.MySQLError):
                cursor.close()  # reads out what is left, so the connection stays usable

    def users(self) -> Iterator[dict[str, Any]]:
        return self.stream(
            "SELECT u.id, u.first_name, u.last_name, u.email, u.email_is_verified, u.additional_email_1,"
            " u.additional_email_1_is_verified, u.additional_email_2, u.additional_email_2_is_verified,"
            f" u.created_at, u.updated_at, {_ACTIVE} AS is_active FROM user u ORDER BY u.id"
        )

    def badges(self) -> Iterator[dict[str, Any]]:
        # One row per badge: its first image (by id), and how many image rows it has.
        # An inactive user's badge brings no image data over the wire.
        return self.stream(
            "SELECT b.id, b.user_id, b.awarded_to_email_address, b.endpoint, b.signature, b.body,"
            " b.body_hash, b.validated_on, b.public_path, b.public, u.id IS NOT NULL AS user_found,"
            f" {_ACTIVE} AS is_active,"
            " (SELECT COUNT(*) FROM badge_image i WHERE i.badge_hash = b.body_hash) AS image_rows,"
            f" CASE WHEN u.id IS NOT NULL AND {_ACTIVE} THEN (SELECT i.image_data FROM badge_image i"
            "   WHERE i.badge_hash = b.body_hash ORDER BY i.id LIMIT 1) END AS image_data"
            " FROM badge b LEFT JOIN user u ON u.id = b.user_id ORDER BY b.id"
        )

    def orphan_images(self) -> int:
        """Image rows whose hash names no badge."""
        return int(
            self.query(
                "SELECT COUNT(*) FROM badge_image i WHERE i.badge_hash IS NULL"
                " OR NOT EXISTS (SELECT 1 FROM badge b WHERE b.body_hash = i.badge_hash)"
            )[0][0]
        )

    def groups(self) -> Iterator[dict[str, Any]]:
        # A group's portfolio is its first (by id); any others are counted per group.
        return self.stream(
            "SELECT g.id, g.user_id, g.name, g.url, g.public, g.badges, u.id IS NOT NULL AS user_found,"
            f" {_ACTIVE} AS is_active,"
            " (SELECT COUNT(*) FROM portfolio q WHERE q.group_id = g.id) AS portfolio_rows,"
            " p.id AS portfolio_id, p.url AS portfolio_url, p.title, p.subtitle, p.preamble, p.stories"
            " FROM `group` g LEFT JOIN user u ON u.id = g.user_id"
            " LEFT JOIN portfolio p ON p.id = (SELECT MIN(q.id) FROM portfolio q WHERE q.group_id = g.id)"
            " ORDER BY g.id"
        )

    def orphan_portfolios(self) -> int:
        return int(
            self.query(
                "SELECT COUNT(*) FROM portfolio p"
                " WHERE NOT EXISTS (SELECT 1 FROM `group` g WHERE g.id = p.group_id)"
            )[0][0]
        )

    def badge_owners(self, badge_ids: Sequence[int]) -> dict[int, int | None]:
        """Who holds each of these badges (ids that name no badge are absent)."""
        owners: dict[int, int | None] = {}
        ids = sorted(set(badge_ids))
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            marks = ", ".join(["%s"] * len(part))
            for badge_id, user_id in self.query(f"SELECT id, user_id FROM badge WHERE id IN ({marks})", part):
                owners[int(badge_id)] = None if user_id is None else int(user_id)
        return owners

    def grants(self) -> Iterator[dict[str, Any]]:
        return self.stream(
            "SELECT s.id, s.user_id, s.access_time, s.access_token, s.refresh_token, s.permissions, s.origin,"
            f" u.id IS NOT NULL AS user_found, {_ACTIVE} AS is_active"
            " FROM bpc_session s LEFT JOIN user u ON u.id = s.user_id ORDER BY s.id"
        )

    def shared_addresses(self) -> list[tuple[str, int, str, bool]]:
        """Every (address, user id, column, verified) of an active user whose address another
        active user also has, compared without case or surrounding space.

        The database finds the candidates, so memory holds only the shared addresses; its
        collation is looser than lowercasing (it also folds accents), so callers compare again.
        """
        parts = " UNION ALL ".join(
            f"SELECT u.{column} AS address, u.id AS user_id, '{column}' AS field, u.{flag} AS verified"
            f" FROM user u WHERE {_ACTIVE} AND u.{column} IS NOT NULL AND TRIM(u.{column}) <> ''"
            for column, flag in _EMAIL_FIELDS
        )
        key = "LOWER(REGEXP_REPLACE(address, '^[[:space:]]+|[[:space:]]+$', ''))"
        rows = self.query(
            f"WITH a AS ({parts}),"
            f" k AS (SELECT {key} AS k FROM a GROUP BY k HAVING COUNT(DISTINCT user_id) > 1)"
            f" SELECT a.address, a.user_id, a.field, a.verified FROM a JOIN k ON {key} = k.k"
            " ORDER BY a.user_id, a.field"
        )
        return [(str(addr), int(uid), str(field), bool(verified)) for addr, uid, field, verified in rows]


def _explain(error: Exception, target: DatabaseTarget) -> str:
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    if code in _CANNOT_CONNECT:
        return f"cannot reach the {target.describe()}: the server does not answer there"
    if code in _ACCESS_DENIED:
        return f"the server refused the credentials for {target.describe()}"
    if code == _UNKNOWN_DATABASE:
        return f"the server has no {target.describe()}"
    detail = str(error.args[1]) if len(error.args) > 1 else str(error)
    return f"the {target.describe()} answered with an error: {detail}"
