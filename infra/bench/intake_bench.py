"""Intake throughput (learners/s, badges/s) and peak memory, one fresh process per export size.

For each size: one process writes the export ZIP (``infra.local.sample_export``), then another
process starts the local stack (``infra.local.stack.LocalStack``: the template's resources in
moto, in that process), uploads the ZIP to the exports bucket under a key no notification
watches, and times the intake's domain entry point ``backpack_migrate.intake.read_export``
(manifest and ZIP directory read from S3 by range, emails encrypted, chunk jobs queued). Its
peak RSS (``ru_maxrss``) is that process's, moto included, and is reported with the baseline
measured just before intake started.

Parts that are not in the tree yet make the bench print ``skipped: <reason>``, never a figure.
``python -m infra.bench.intake_bench [--sizes 10000:50000,1000:5000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from infra.bench.common import Part

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIZES = ((10_000, 50_000, "10k"), (1_000, 5_000, "1k"))
ISSUER_BASE_URL = "http://127.0.0.1:9/issuers"  # never fetched by intake
BENCH_KEY = "bench/intake-export.zip"  # outside the notified exports/ prefix


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


MARK = "BENCH-RESULT "  # the functions' logs and metrics share this process's stdout


def _emit(payload: dict[str, Any]) -> int:
    print(MARK + json.dumps(payload), flush=True)
    return 0


def child_generate(path: Path, learners: int, badges: int) -> int:
    try:
        from infra.local.sample_export import write_large_export
    except ImportError as exc:
        return _emit({"skipped": f"the export generator is not in the tree yet ({exc})"})
    started = time.perf_counter()
    write_large_export(path, learners, badges, ISSUER_BASE_URL, issuers=200)
    return _emit({"seconds": time.perf_counter() - started, "bytes": path.stat().st_size})


def child_intake(path: Path, learners: int, badges: int) -> int:
    try:
        from backpack_migrate.config import get_settings
        from backpack_migrate.intake import read_export
        from backpack_migrate.services import get_services, use_services
        from infra.local.stack import LocalStack
    except ImportError as exc:
        return _emit({"skipped": f"an intake piece is not in the tree yet ({exc})"})
    try:
        stack = LocalStack(
            PROJECT_ROOT,
            badgr_api_url="http://127.0.0.1:9",
            badgr_authorize_url="http://127.0.0.1:9/authorize",
            badgr_client_secret="bench-secret",
        )
        stack.start()
    except Exception as exc:
        return _emit({"skipped": f"the local stack did not start: {type(exc).__name__}: {exc}"})
    try:
        get_settings.cache_clear()
        use_services(None)
        svc = get_services()
        bucket = get_settings().exports_bucket
        svc.s3.upload_file(str(path), bucket, BENCH_KEY)
        head = svc.s3.head_object(Bucket=bucket, Key=BENCH_KEY)
        baseline = _rss_mb()
        started = time.perf_counter()
        export = read_export(svc, bucket, BENCH_KEY, head["ETag"].strip('"'), int(head["ContentLength"]))
        seconds = time.perf_counter() - started
        peak = _rss_mb()
        _emit(
            {
                "seconds": seconds,
                "learners": int(getattr(export, "learner_count", 0) or 0),
                "badges": int(getattr(export, "badge_count", 0) or 0),
                "status": str(getattr(export, "status", "")),
                "chunks": int(getattr(export, "chunk_count", 0) or 0),
                "peak_mb": round(peak, 1),
                "baseline_mb": round(baseline, 1),
            }
        )
    except Exception as exc:
        _emit({"skipped": f"intake failed: {type(exc).__name__}: {exc}"})
    # The stack's dispatchers go on with the queued chunk jobs (and what follows them); the
    # figures are out, so give stopping a bounded time and leave.
    stopper = threading.Thread(target=stack.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=20)
    sys.stdout.flush()
    os._exit(0)


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "infra.bench.intake_bench", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(PROJECT_ROOT),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"took longer than {timeout:.0f} s"}
    lines = [line[len(MARK) :] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"the bench process failed (exit {proc.returncode}): {tail[:200]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def bench_intake(sizes: tuple[tuple[int, int, str], ...] = SIZES, timeout: float = 1800) -> Part:
    part = Part(
        "intake: export ZIP on S3 (moto) -> learners recorded and chunk jobs queued",
        headers=["size", "learners", "badges", "seconds", "learners/s", "badges/s", "peak MB", "baseline MB"],
    )
    for _learners, _badges, label in sizes:
        for key in ("learners_per_s", "badges_per_s", "peak_mb"):
            part.figures[f"intake_{label}_{key}"] = None
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for learners, badges, label in sizes:
            path = Path(tmp) / f"export-{label}.zip"
            made = _child(
                ["--generate", str(path), "--learners", str(learners), "--badges", str(badges)], timeout
            )
            if "skipped" in made:
                part.notes.append(f"{label}: skipped: {made['skipped']}")
                continue
            part.notes.append(
                f"{label}: export of {learners} learners / {badges} badges written in "
                f"{made['seconds']:.1f} s ({made['bytes'] / 1e6:.1f} MB)"
            )
            got = _child(
                ["--intake", str(path), "--learners", str(learners), "--badges", str(badges)], timeout
            )
            if "skipped" in got:
                part.notes.append(f"{label}: skipped: {got['skipped']}")
                continue
            seconds = float(got["seconds"])
            lps = round(got["learners"] / seconds, 1) if seconds > 0 else None
            bps = round(got["badges"] / seconds, 1) if seconds > 0 else None
            part.figures[f"intake_{label}_learners_per_s"] = lps
            part.figures[f"intake_{label}_badges_per_s"] = bps
            part.figures[f"intake_{label}_peak_mb"] = got["peak_mb"]
            part.rows.append(
                [
                    label,
                    str(got["learners"]),
                    str(got["badges"]),
                    f"{seconds:.2f}",
                    str(lps),
                    str(bps),
                    str(got["peak_mb"]),
                    str(got["baseline_mb"]),
                ]
            )
            if got["learners"] != learners or got["badges"] != badges:
                part.notes.append(
                    f"{label}: intake counted {got['learners']} learners / {got['badges']} badges "
                    f"(status {got['status']}), generated {learners} / {badges}"
                )
    part.notes.append(
        "peak MB = ru_maxrss of the intake process (moto runs in it too); baseline = before intake; "
        "chunk processing runs in the stack's dispatchers and is not in these figures"
    )
    return part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Intake throughput and peak memory.")
    parser.add_argument("--generate", type=Path)
    parser.add_argument("--intake", type=Path)
    parser.add_argument("--learners", type=int, default=10_000)
    parser.add_argument("--badges", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.generate:
        return child_generate(args.generate, args.learners, args.badges)
    if args.intake:
        return child_intake(args.intake, args.learners, args.badges)
    from infra.bench.common import render

    print(render(bench_intake()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
