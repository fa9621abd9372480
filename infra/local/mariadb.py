"""A private MariaDB server for tests, the demo and the bench: own data folder, own socket.

Nothing system-wide is used or changed: the server is initialised in a folder of its own
(``mariadb-install-db``), listens on a socket inside it and on a free loopback port, and is
stopped (and the folder removed, when it was a temporary one) afterwards::

    with MariaDBServer() as server:
        server.create_database("backpack", schema=SCHEMA_SQL)
        url = server.url("backpack")        # mysql://root@localhost/backpack?unix_socket=...

``make test`` installs the server package when missing (infra/local/install-mariadb.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

SCHEMA_SQL = Path(__file__).resolve().parents[3] / "shared" / "backpack-db" / "schema.sql"

# Settings for a throwaway server: fast bulk loads, small memory, nothing durable.
_SERVER_OPTIONS = [
    "--skip-log-bin",
    "--innodb-buffer-pool-size=256M",
    "--innodb-log-file-size=256M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--max-allowed-packet=256M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
]


class MariaDBUnavailableError(RuntimeError):
    """No MariaDB server can be run on this machine (the tests skip with this message)."""


def server_binary() -> Path | None:
    for candidate in (os.environ.get("MARIADBD"), "/usr/sbin/mariadbd", shutil.which("mariadbd")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def missing_tools() -> str | None:
    """Why no server can be started here, or None when it can."""
    if server_binary() is None:
        return "mariadbd is not installed (make test installs Debian's mariadb-server)"
    for tool in ("mariadb-install-db", "mariadb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (it comes with Debian's mariadb-server)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MariaDBServer:
    """One private server. ``root`` logs in over the socket (and loopback) without a password."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self._own_dir = base_dir is None
        # Unix socket paths are limited to ~108 bytes, so keep the folder short.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="bpdb-", dir="/tmp"))
        self.data_dir = self.base_dir / "data"
        self.socket = self.base_dir / "mariadb.sock"
        self.log_file = self.base_dir / "server.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> MariaDBServer:
        reason = missing_tools()
        if reason:
            raise MariaDBUnavailableError(reason)
        binary = server_binary()
        assert binary is not None
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "mysql").is_dir():
            init = subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self.data_dir}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    *as_root,
                ],
                capture_output=True,
                check=False,
                timeout=timeout,
            )
            if init.returncode != 0:
                raise MariaDBUnavailableError(
                    "mariadb-install-db failed: " + init.stderr.decode(errors="replace")[-2000:]
                )
        self.port = _free_port()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    "--no-defaults",
                    f"--datadir={self.data_dir}",
                    f"--socket={self.socket}",
                    f"--port={self.port}",
                    f"--pid-file={self.base_dir / 'mariadb.pid'}",
                    f"--log-error={self.log_file}",
                    *_SERVER_OPTIONS,
                    *as_root,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MariaDBUnavailableError(f"mariadbd exited at start: {self._log_tail()}")
            if self.socket.exists() and self._ping():
                return self
            time.sleep(0.2)
        self.stop()
        raise MariaDBUnavailableError(f"mariadbd did not answer within {timeout:.0f} s: {self._log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # using it ----------------------------------------------------------------------------

    def url(self, database: str, *, user: str = "root", password: str = "", tcp: bool = False) -> str:
        """The ``--database`` URL of ``export-db`` for this server (socket unless ``tcp``)."""
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        if tcp:
            return f"mysql://{auth}@127.0.0.1:{self.port}/{database}"
        return f"mysql://{auth}@localhost/{database}?unix_socket={quote(str(self.socket))}"

    def client_args(self, database: str | None = None) -> list[str]:
        """The ``mariadb`` client's command line for root on this server."""
        return [
            "mariadb",
            "--no-defaults",
            f"--socket={self.socket}",
            "--user=root",
            *([database] if database else []),
        ]

    def sql(self, statements: str, database: str | None = None, *, timeout: float = 600.0) -> str:
        """Run SQL text through the ``mariadb`` client; its output (tab-separated) is returned."""
        done = subprocess.run(
            [*self.client_args(database), "--batch", "--skip-column-names"],
            input=statements.encode(),
            capture_output=True,
            check=False,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb client failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return done.stdout.decode()

    def create_database(self, name: str, schema: Path | None = SCHEMA_SQL) -> None:
        """A fresh database (dropped first when present), loaded with ``schema`` when given."""
        self.sql(f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`;")
        if schema is not None:
            if not schema.is_file():
                raise FileNotFoundError(f"no schema at {schema}")
            self.sql(schema.read_text("utf-8"), name)

    def dump(self, database: str, out: Path) -> None:
        """``mariadb-dump`` of one database to ``out`` (the bench's floor)."""
        with out.open("wb") as sink:
            subprocess.run(
                [
                    "mariadb-dump",
                    "--no-defaults",
                    f"--socket={self.socket}",
                    "--user=root",
                    "--quick",
                    database,
                ],
                stdout=sink,
                check=True,
            )

    # internals ---------------------------------------------------------------------------

    def _ping(self) -> bool:
        done = subprocess.run(
            [*self.client_args(), "-e", "SELECT 1"], capture_output=True, check=False, timeout=30
        )
        return done.returncode == 0

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no server log)"
