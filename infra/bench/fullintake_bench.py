"""Intake of a full-fidelity export (what ``export-db`` writes), in learners/s and badges/s.

On one private MariaDB server, ``fill_bulk`` generates a Backpack database (users, badges with
baked PNGs, a group per user, a portfolio per two users, a grant per ten), ``export-db`` writes
its export, and a fresh process then measures, for that ZIP:

1. *read*: ``read_export`` (format told apart by content, members streamed by byte range,
   badges, groups and grants joined by user through the scratch database, chunk jobs queued);
2. *record*: every chunk job through ``process_full_chunk`` (learners, index items, groups,
   grants, and each badge's image read back by range and unbaked).

The exports bucket is a local file read by range (no network, no moto) and the store counts the
writes it is given without keeping them, so the figures are intake's own code; peak RSS is the
measuring process's (``ru_maxrss``).

``python -m infra.bench.fullintake_bench [--users 10000 --badges 50000]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from infra.bench.common import Part, per_second

DEFAULT_SIZE = (10_000, 50_000)


class _FileS3:
    """``head_object`` / ranged ``get_object`` over one local file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.etag = '"bench"'

    def head_object(self, **_: Any) -> dict[str, Any]:
        return {"ContentLength": self.size, "ETag": self.etag}

    def get_object(self, Range: str | None = None, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's name
        start, end = 0, self.size - 1
        if Range:
            first, last = Range.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last), self.size - 1)
        with self.path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(end - start + 1)
        return {"Body": io.BytesIO(data), "ContentLength": len(data)}


class _CountingStore:
    """Takes every write and keeps only counts (and the export record)."""

    def __init__(self) -> None:
        self.export: Any = None
        self.written: dict[str, int] = {}

    def _count(self, what: str, items: Iterable[Any]) -> int:
        n = sum(1 for _ in items)
        self.written[what] = self.written.get(what, 0) + n
        return n

    def get_export(self, export_id: str) -> Any:
        return self.export

    def put_export_if_absent(self, export: Any) -> bool:
        self.export = export
        return True

    def save_export(self, export: Any) -> None:
        self.export = export

    def put_learner_if_absent(self, learner: Any) -> bool:
        return self._count("learners", [learner]) == 1

    def list_badges(self, learner_id: str) -> list[Any]:
        return []

    def put_badges_if_absent(self, badges: Iterable[Any]) -> int:
        return self._count("badges", badges)

    def put_body_hash_index(self, badges: Iterable[Any]) -> list[str]:
        self._count("body_hashes", badges)
        return []

    def put_learner_index(self, learner_id: str, user_id: int, address_ids: Iterable[str]) -> list[str]:
        self._count("addresses", address_ids)
        return []

    def put_groups_if_absent(self, groups: Iterable[Any]) -> int:
        return self._count("groups", groups)

    def put_grants_if_absent(self, grants: Iterable[Any]) -> int:
        return self._count("grants", grants)


class _FileQueue:
    """Chunk jobs go to a file (not memory), so the peak is intake's own; other jobs are counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: dict[str, int] = {}

    def send(self, queue_url: str, jobs: Iterable[dict[str, Any]]) -> int:
        batch = list(jobs)
        self.counts[queue_url] = self.counts.get(queue_url, 0) + len(batch)
        if queue_url == "chunk":
            with self.path.open("a", encoding="utf-8") as sink:
                sink.writelines(json.dumps(job) + "\n" for job in batch)
        return len(batch)

    def send_later(self, queue_url: str, jobs: Iterable[dict[str, Any]], seconds: float) -> int:
        return self.send(queue_url, jobs)

    def receive(self, queue_url: str, most: int) -> list[tuple[dict[str, Any], str]]:
        return []

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        return None

    def waiting(self, queue_url: str) -> int:
        return 0

    def take(self, queue_url: str) -> Iterator[dict[str, Any]]:
        # Jobs sent while these run (continuations) are appended and read in turn.
        with self.path.open(encoding="utf-8") as source:
            for line in source:
                yield json.loads(line)


class _LocalKms:
    def generate_data_key(self, **_: Any) -> dict[str, Any]:
        key = os.urandom(32)
        return {"Plaintext": key, "CiphertextBlob": key}

    def decrypt(self, CiphertextBlob: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's name
        return {"Plaintext": CiphertextBlob}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_measure(path: Path) -> int:
    from backpack_migrate.config import Settings
    from backpack_migrate.crypto import EmailCipher
    from backpack_migrate.fullintake import FullChunkJob, process_full_chunk
    from backpack_migrate.intake import read_export
    from backpack_migrate.services import Services

    store, queue, s3 = _CountingStore(), _FileQueue(path.with_suffix(".jobs")), _FileS3(path)
    settings = Settings.model_validate(
        {"CHUNK_QUEUE_URL": "chunk", "VERIFY_QUEUE_URL": "verify", "NOTIFY_QUEUE_URL": "notify"}
    )
    svc = Services(
        settings=settings,
        store=store,  # type: ignore[arg-type]
        queue=queue,
        s3=s3,
        emails=EmailCipher(_LocalKms(), "key"),
        tokens=None,  # type: ignore[arg-type]
        link_secret=lambda: b"l" * 32,
        learner_id_secret=lambda: b"i" * 32,
        sender=None,  # type: ignore[arg-type]
        rate=None,  # type: ignore[arg-type]
        verifier_factory=lambda: None,
        badgr_factory=lambda: None,
    )
    started = time.perf_counter()
    export = read_export(svc, "bench", "exports/full.zip", "bench", s3.size)
    read_s = time.perf_counter() - started
    read_peak = _maxrss_mb()
    started = time.perf_counter()
    for job in queue.take("chunk"):
        process_full_chunk(svc, FullChunkJob.model_validate(job), lambda: 900_000)
    record_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "status": str(export.status),
                "learners": export.learner_count,
                "badges": export.badge_count,
                "chunks": export.chunk_count,
                "read_s": read_s,
                "record_s": record_s,
                "read_peak_mb": round(read_peak, 1),
                "peak_mb": round(_maxrss_mb(), 1),
                "written": store.written,
            }
        )
    )
    return 0


def bench_fullintake(users: int = DEFAULT_SIZE[0], badges: int = DEFAULT_SIZE[1]) -> Part:
    part = Part(
        "intake of a full-fidelity export (export-db's ZIP)",
        headers=[
            "users",
            "badges",
            "ZIP MB",
            "read learners/s",
            "read badges/s",
            "record badges/s",
            "peak MB",
        ],
    )
    from infra.local.mariadb import SCHEMA_SQL, MariaDBServer, MariaDBUnavailableError, missing_tools

    reason = missing_tools() or (None if SCHEMA_SQL.is_file() else "the Backpack's schema is not present")
    if reason:
        return part.skip(reason)
    with tempfile.TemporaryDirectory(prefix="bench-fullintake-") as folder:
        out = Path(folder) / "full.zip"
        try:
            server = MariaDBServer().start()
        except MariaDBUnavailableError as error:
            return part.skip(str(error))
        try:
            from backpack_migrate.export_db import export_database
            from infra.local.backpack_data import fill_bulk

            server.create_database("bench_intake")
            fill_bulk(server, "bench_intake", users, badges)
            export_database(server.url("bench_intake"), out)
        finally:
            server.stop()
        answer = subprocess.run(
            [sys.executable, "-m", "infra.bench.fullintake_bench", "--child", str(out)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        lines = [line for line in answer.stdout.splitlines() if line.startswith('{"status"')]
        if answer.returncode != 0 or not lines:
            return part.skip(f"the measuring process failed: {answer.stderr[-500:]}")
        result = json.loads(lines[-1])
        zip_mb = out.stat().st_size / 1e6
    learners, found = int(result["learners"]), int(result["badges"])
    part.rows.append(
        [
            f"{users:,}",
            f"{found:,}",
            f"{zip_mb:.0f}",
            f"{learners / result['read_s']:,.0f}",
            f"{found / result['read_s']:,.0f}",
            f"{found / result['record_s']:,.0f}",
            f"{result['peak_mb']:.0f}",
        ]
    )
    part.notes.append(
        f"read {result['read_s']:.1f} s ({result['chunks']} chunk jobs, "
        f"peak {result['read_peak_mb']:.0f} MB), "
        f"record {result['record_s']:.1f} s; store and queue are counters, the bucket a local file"
    )
    part.figures.update(
        {
            "fullintake_read_learners_per_s": per_second(learners, result["read_s"]),
            "fullintake_read_badges_per_s": per_second(found, result["read_s"]),
            "fullintake_record_learners_per_s": per_second(learners, result["record_s"]),
            "fullintake_record_badges_per_s": per_second(found, result["record_s"]),
            "fullintake_peak_mb": result["peak_mb"],
        }
    )
    return part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--badges", type=int, default=DEFAULT_SIZE[1])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_measure(args.child)
    from infra.bench.common import render

    print(render(bench_fullintake(args.users, args.badges)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
