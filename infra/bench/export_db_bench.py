"""``export-db`` throughput (rows/s) and peak memory, against ``mariadb-dump`` of the same database.

For each size (smallest first), on one private MariaDB server (infra/local/mariadb.py):

1. *generate*: ``infra.local.backpack_data.fill_bulk`` loads the Backpack's schema with
   ``users`` users, ``badges`` badges and their baked images (base64, as the Backpack kept them),
   a group per user, a portfolio per two users and a Connect grant per ten, by ``LOAD DATA``;
2. *export*: ``backpack-migrate export-db --quiet`` in a fresh process; its wall time and peak
   RSS (``ru_maxrss`` of that process alone, from ``wait4``);
3. *floor*: ``mariadb-dump --quick`` of the same database, in a fresh process, same figures.

Rows are every row of the six tables. Memory must not grow with the size: the figures name the
peak of each size and the growth from the smaller to the larger.

``python -m infra.bench.export_db_bench [--sizes 10000:50000,100000:500000]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.bench.common import Part, per_second
from infra.local.mariadb import SCHEMA_SQL, MariaDBServer, MariaDBUnavailableError, missing_tools

DEFAULT_SIZES = ((10_000, 50_000), (100_000, 500_000))


def _label(users: int) -> str:
    return f"{users // 1000}k"


def _run_measured(command: list[str], stdout: int | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {process.returncode}: {errors[-1000:]}")
    return elapsed, usage.ru_maxrss / 1024


def bench_export_db(sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES) -> Part:
    part = Part(
        "export-db (Backpack database -> full-fidelity export)",
        headers=[
            "users",
            "badges",
            "rows",
            "generate rows/s",
            "export rows/s",
            "export peak MB",
            "ZIP MB",
            "mariadb-dump rows/s",
            "dump peak MB",
            "export / dump",
        ],
    )
    reason = missing_tools()
    if reason:
        return part.skip(reason)
    if not SCHEMA_SQL.is_file():
        return part.skip("the Backpack's schema (../shared/backpack-db/schema.sql) is not present")
    peaks: list[float] = []
    try:
        server = MariaDBServer().start()
    except MariaDBUnavailableError as error:
        return part.skip(str(error))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-db-") as folder:
            for users, badges in sorted(sizes):
                label = _label(users)
                database = f"bench_{label}"
                server.create_database(database)
                started = time.perf_counter()
                counts = _fill(server, database, users, badges)
                generate_s = time.perf_counter() - started
                rows = sum(counts.values())
                out = Path(folder) / f"{database}.zip"
                export_s, export_mb = _run_measured(
                    [
                        sys.executable,
                        "-m",
                        "backpack_migrate.cli",
                        "export-db",
                        "--quiet",
                        "--database",
                        server.url(database),
                        "--out",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                )
                zip_mb = out.stat().st_size / 1e6
                out.unlink()
                dump = Path(folder) / f"{database}.sql"
                with dump.open("wb") as sink:
                    dump_s, dump_mb = _run_measured(
                        [
                            "mariadb-dump",
                            "--no-defaults",
                            f"--socket={server.socket}",
                            "--user=root",
                            "--quick",
                            database,
                        ],
                        stdout=sink.fileno(),
                    )
                dump.unlink()
                server.sql(f"DROP DATABASE `{database}`")
                peaks.append(export_mb)
                part.rows.append(
                    [
                        f"{users:,}",
                        f"{badges:,}",
                        f"{rows:,}",
                        f"{rows / generate_s:,.0f}",
                        f"{rows / export_s:,.0f}",
                        f"{export_mb:.0f}",
                        f"{zip_mb:.0f}",
                        f"{rows / dump_s:,.0f}",
                        f"{dump_mb:.0f}",
                        f"{dump_s / export_s:.2f}",
                    ]
                )
                part.figures.update(
                    {
                        f"export_db_{label}_rows_per_s": per_second(rows, export_s),
                        f"export_db_{label}_peak_mb": round(export_mb, 1),
                        f"export_db_{label}_zip_mb": round(zip_mb, 1),
                        f"export_db_{label}_dump_rows_per_s": per_second(rows, dump_s),
                        f"export_db_{label}_generate_rows_per_s": per_second(rows, generate_s),
                    }
                )
    finally:
        server.stop()
    if len(peaks) > 1:
        part.figures["export_db_memory_growth_mb"] = round(peaks[-1] - peaks[0], 1)
        part.notes.append(
            f"peak memory from the smallest to the largest size: {peaks[-1] - peaks[0]:+.1f} MB"
        )
    part.notes.append(
        "export / dump: how much longer mariadb-dump took than export-db (above 1: export-db faster)"
    )
    return part


def _fill(server: MariaDBServer, database: str, users: int, badges: int) -> dict[str, int]:
    from infra.local.backpack_data import fill_bulk

    return fill_bulk(server, database, users, badges)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(f"{u}:{b}" for u, b in DEFAULT_SIZES))
    args = parser.parse_args(argv)
    sizes = tuple((int(u), int(b)) for u, b in (s.split(":") for s in args.sizes.split(",")))
    from infra.bench.common import render

    print(render(bench_export_db(sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
