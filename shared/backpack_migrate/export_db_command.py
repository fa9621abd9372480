"""The ``export-db`` and ``export-schema`` commands of ``backpack-migrate``.

Kept apart from cli.py so the command line only names them; PyMySQL and rich load only when
``export-db`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXPORT_COMMANDS = ("export-db", "export-schema")


def add_export_commands(commands: Any) -> None:
    export = commands.add_parser(
        "export-db", help="write the Backpack's MySQL database as a full-fidelity export ZIP (or upload it)"
    )
    export.add_argument(
        "--database",
        required=True,
        help="mysql://USER:PASS@HOST:PORT/DB (add ?unix_socket=/path/to/socket for a local socket)",
    )
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="the ZIP to write, e.g. backpack-export.zip")
    where.add_argument("--upload", action="store_true", help="send it straight to the exports bucket")
    export.add_argument("--bucket", help="with --upload: the exports bucket")
    export.add_argument("--stack", help="with --upload: a deployed stack whose exports bucket to use")
    export.add_argument(
        "--key", help="with --upload: object name under exports/ (default: backpack-db-<time>.zip)"
    )
    export.add_argument("--quiet", action="store_true", help="no progress bars")
    schema = commands.add_parser("export-schema", help="print the JSON Schema of the full-fidelity export")
    schema.add_argument("--out", type=Path, help="write it to this file instead")


def run_export_command(args: argparse.Namespace, upload: Callable[[argparse.Namespace], int]) -> int:
    if args.command == "export-schema":
        from .fullexport import json_schema

        text = json.dumps(json_schema(), indent=2) + "\n"
        if args.out:
            args.out.write_text(text, "utf-8")
        else:
            sys.stdout.write(text)
        return 0
    return _export_db(args, upload)


def _export_db(args: argparse.Namespace, upload: Callable[[argparse.Namespace], int]) -> int:
    from .backpack_db import DatabaseError
    from .export_db import export_database, iter_summary_lines

    with tempfile.TemporaryDirectory(prefix="backpack-export-") as scratch:
        out: Path = (
            args.out or Path(scratch) / f"backpack-db-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.zip"
        )
        try:
            with _progress(quiet=args.quiet) as (on_totals, progress):
                summary = export_database(args.database, out, progress=progress, on_totals=on_totals)
        except DatabaseError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except OSError as error:
            print(f"error: cannot write {out}: {error.strerror or error}", file=sys.stderr)
            return 2
        for line in iter_summary_lines(summary):
            print(line)
        if not args.upload:
            return 0
        return upload(
            argparse.Namespace(
                export=str(out), bucket=args.bucket, stack=args.stack, key=args.key or out.name
            )
        )


Totals = Callable[[dict[str, int]], None]
Advance = Callable[[str, int], None]


@contextmanager
def _progress(*, quiet: bool) -> Iterator[tuple[Totals | None, Advance | None]]:
    """A progress bar per table (rich, on stderr), advanced in steps so it costs nothing per row."""
    if quiet:
        yield None, None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # the [cli] extra is not installed: no bars, same export
        yield None, None
        return
    bars = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, Any] = {}
    pending: dict[str, int] = {}

    def on_totals(totals: dict[str, int]) -> None:
        for table, total in totals.items():
            tasks[table] = bars.add_task(table, total=total)

    def advance(table: str, n: int) -> None:
        pending[table] = pending.get(table, 0) + n
        if pending[table] >= 500 and table in tasks:
            bars.advance(tasks[table], pending.pop(table))

    with bars:
        yield on_totals, advance
        for table, n in pending.items():
            if table in tasks:
                bars.advance(tasks[table], n)
