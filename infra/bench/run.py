"""``make bench``: every benchmark part, a table each, then one JSON line of the named figures.

Parts that cannot run say why and put null in the JSON. The last line of the output is always
the JSON object, so scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from infra.bench.common import Part, render

FIGURES = (
    "verify_corpus_ours_per_s",
    "verify_corpus_reference_per_s",
    "verify_loopback_ours_per_s",
    "verify_loopback_reference_per_s",
    "verify_loopback_ratio",
    "verify_loopback_reference_sample",
    "intake_10k_learners_per_s",
    "intake_10k_badges_per_s",
    "intake_10k_peak_mb",
    "intake_10k_growth_mb",
    "intake_10k_traced_mb",
    "intake_10k_export_mb",
    "intake_1k_learners_per_s",
    "intake_1k_badges_per_s",
    "intake_1k_peak_mb",
    "intake_1k_growth_mb",
    "intake_1k_traced_mb",
    "intake_1k_export_mb",
    "cold_import_ms",
    "cold_import_from",
    "e2e_badges",
    "e2e_recorded_s",
    "e2e_verified_s",
    "e2e_migrate_workers",
    "e2e_badges_per_s",
    "e2e_ideal_per_s",
    "e2e_of_ideal",
    "e2e_badgr_calls_per_badge",
    "e2e_badgr_own_import_ms",
    "e2e_of_ideal_with_badgr_time",
    "e2e_rss_start_mb",
    "e2e_rss_peak_mb",
    "e2e_export_2k_s",
    "e2e_export_2k_learners_per_s",
    "e2e_export_2k_badges_per_s",
    "e2e_export_2k_peak_mb",
    "e2e_export_6k_s",
    "e2e_export_6k_learners_per_s",
    "e2e_export_6k_badges_per_s",
    "e2e_export_6k_peak_mb",
    "cold_import_boto3_ms",
    "export_db_10k_rows_per_s",
    "export_db_10k_peak_mb",
    "export_db_10k_dump_rows_per_s",
    "export_db_100k_rows_per_s",
    "export_db_100k_peak_mb",
    "export_db_100k_dump_rows_per_s",
    "export_db_memory_growth_mb",
    "fullintake_read_learners_per_s",
    "fullintake_read_badges_per_s",
    "fullintake_record_learners_per_s",
    "fullintake_record_badges_per_s",
    "fullintake_peak_mb",
)


def _guarded(title: str, build: Callable[[], list[Part]]) -> list[Part]:
    started = time.perf_counter()
    try:
        parts = build()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [Part(title).skip(f"the part crashed: {type(exc).__name__}: {exc}")]
    for part in parts:
        part.notes.append(f"({title} took {time.perf_counter() - started:.0f} s)")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark part.")
    parser.add_argument(
        "--only", choices=("verify", "cold", "intake", "export-db", "full-intake", "e2e"), action="append"
    )
    parser.add_argument("--badges", type=int, default=10_000, help="badges on the loopback site")
    parser.add_argument("--sample", type=int, default=250, help="badges the reference verifies on loopback")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5, help="cold-import runs per function")
    parser.add_argument(
        "--learners", type=int, default=1000, help="learners of the end-to-end move (0: no move)"
    )
    parser.add_argument(
        "--migrate-workers", type=int, default=8, help="migrate workers of the end-to-end run"
    )
    parser.add_argument(
        "--dynamodb-in-process",
        action="store_true",
        help="the end-to-end runs (the move, whole exports) with moto's DynamoDB on a thread of the "
        "stack's process, as in the tests",
    )
    parser.add_argument(
        "--export-sizes",
        default="2000:6000,6000:18000",
        help="learners:badges of each whole export timed end to end (comma-separated; empty for none)",
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or ("verify", "cold", "intake", "export-db", "full-intake", "e2e"))

    from infra.bench import cold_imports, intake_bench, verify_bench

    parts: list[Part] = []
    if "verify" in chosen:
        vargs = verify_bench.parse_args(
            ["--badges", str(args.badges), "--sample", str(args.sample), "--workers", str(args.workers)]
        )
        parts += _guarded("verify", lambda: verify_bench.run(vargs))
    if "cold" in chosen:
        parts += _guarded("cold imports", lambda: [cold_imports.bench_cold_imports(args.runs)])
    if "intake" in chosen:
        parts += _guarded("intake", lambda: [intake_bench.bench_intake()])
    if "export-db" in chosen:
        from infra.bench import export_db_bench

        parts += _guarded("export-db", lambda: [export_db_bench.bench_export_db()])
    if "e2e" in chosen:
        from infra.bench import e2e_bench

        sizes = tuple(
            (int(size.split(":")[0]), int(size.split(":")[1]))
            for size in args.export_sizes.split(",")
            if size
        )
        parts += _guarded(
            "end to end",
            lambda: e2e_bench.bench_end_to_end(
                args.learners, args.migrate_workers, sizes, dynamodb_process=not args.dynamodb_in_process
            ),
        )
    if "full-intake" in chosen:
        from infra.bench import fullintake_bench

        parts += _guarded("full-fidelity intake", lambda: [fullintake_bench.bench_fullintake()])

    figures: dict[str, Any] = dict.fromkeys(FIGURES)
    for part in parts:
        print(render(part))
        print()
        figures.update(part.figures)
    print(json.dumps(figures, separators=(", ", ": ")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
