"""End to end on the local stack, in two parts.

*The move*: an export from upload to every badge recorded and verified, then every learner's
badges from the move to every badge final, with Badgr 300 ms away. The Badgr sandbox sits behind
the chaos proxy with no faults and 300 ms added to every call, and the migrate queue runs a
stated number of workers, so the ideal is ``workers / 0.3 s``: the figure is how close the
migration comes to it. Learners connect Badgr through the same code the OAuth callback runs
(``store_tokens`` and ``request_migration``), without the browser round trip. The shared import
rate (``BadgrImportsPerSecond``, 10 by default) is set far above what the workers can reach, so
the figure measures the pipeline, not the configured limit. The proxy counts Badgr's calls by
route and a hook counts the AWS calls, so the notes say what one badge costs.

*The whole export*: a generated export (``write_large_export``) from upload to every badge
recorded, through intake and every chunk job, for each size asked, each on a fresh stack. The
verify and notify queues get no pollers there (their jobs wait), so the figure is intake's and
the chunks' own.

Progress is read inside moto (:mod:`infra.bench.census`), so the gauge costs the stack nothing.
Badgr, its chaos proxy and the issuers' sites run in a process of their own
(:mod:`infra.bench.remote_badgr`), as a remote service would. Memory is this process (the
functions, the local stack and moto, which holds every record), sampled every half second.
Schedules run at their own rate (the reconciler every 10 minutes), SQS at the stack's scale.
"""

from __future__ import annotations

import os
import resource
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.bench.census import take_census
from infra.bench.common import Part
from infra.bench.worker_time import WorkerTime, timing_migrate_workers

ROOT = Path(__file__).resolve().parents[2]
LATENCY_S = 0.3
IMPORT_ROUTE = "POST /v2/backpack/import"
EXPORT_SIZES = ((2_000, 6_000), (6_000, 18_000))  # (learners, badges) of the whole-export part
# Far above what the workers can reach: the figure is the pipeline's, not the configured rate's.
BENCH_IMPORTS_PER_SECOND = "1000"
# One process plays every Lambda: their logs and metrics lines would be the bench's own output.
QUIET = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
# Schedules (the reconciler) at their own rate, as on AWS: scaled down a hundredfold, the
# reconciler's index queries (each a walk of the whole table in moto) ran every few seconds.
SCHEDULE_SCALE = 1.0


class _Rss:
    """Resident memory of this process, sampled on a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append(self.now_mb())

    def __enter__(self) -> _Rss:
        self.samples.append(self.now_mb())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    @property
    def peak(self) -> float:
        return max(self.samples)


@contextmanager
def _counting_aws_calls() -> Iterator[Counter[str]]:
    """Every AWS call this process makes, by service and operation, while the block runs."""
    from infra.local import aws_calls

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def count(service: str, operation: str, params: dict[str, Any]) -> None:
        with lock:
            counts[f"{service}:{operation}"] += 1

    aws_calls.add_hook(count, everywhere=True)
    try:
        yield counts
    finally:
        aws_calls.remove_hook(count)


class _Progress:
    """A line on stderr every so often, so a long run shows where it is."""

    def __init__(self, every_s: float = 15.0) -> None:
        self._every = every_s
        self._last = time.monotonic()

    def __call__(self, what: str, census: Any) -> None:
        if time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            line = f"  {what}: {census.learners:,} learners, {dict(census.badges)}"
            print(line, file=sys.stderr, flush=True)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def _per_badge(counts: Counter[str], badges: int, prefix: str = "") -> str:
    shown = [(k, v) for k, v in counts.most_common() if k.startswith(prefix)]
    return ", ".join(f"{k} {v / max(1, badges):.2f}" for k, v in shown[:12])


def bench_end_to_end(
    learners: int = 1000,
    workers: int = 8,
    export_sizes: tuple[tuple[int, int], ...] = EXPORT_SIZES,
    timeout_s: float = 3600,
    dynamodb_process: bool = True,
) -> list[Part]:
    parts = [bench_move(learners, workers, timeout_s, dynamodb_process)] if learners else []
    if export_sizes:
        parts.append(bench_whole_export(export_sizes, timeout_s, dynamodb_process))
    return parts


def bench_move(
    learners: int = 1000, workers: int = 8, timeout_s: float = 3600, dynamodb_process: bool = True
) -> Part:
    import boto3

    from backpack_migrate.badgr import BadgrClient, Tokens
    from backpack_migrate.domain import FINAL_STATES
    from backpack_migrate.migration import request_migration, store_tokens
    from backpack_migrate.services import get_services, reset_services
    from infra.bench.remote_badgr import RemoteBadgr
    from infra.local.demo import CLIENT_ID, _quiet
    from infra.local.sample_export import PEOPLE, build_demo
    from infra.local.stack import LocalStack

    _quiet()
    part = Part(
        f"end to end: {learners:,} learners x 5 badges on the local stack, Badgr +300 ms, "
        f"{workers} migrate workers, moto's DynamoDB "
        + ("in its own process" if dynamodb_process else "in the stack's process"),
        headers=["phase", "badges", "seconds", "badges/s", "of ideal", "RSS start / peak MB"],
    )
    final = frozenset(state.value for state in FINAL_STATES)
    work = ROOT / ".local-stack" / "bench-e2e"
    (work / "site").mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    sent = 0
    final_s: float | None = None
    recorded_s = verified_s = None
    calls: Counter[str] = Counter()
    worker_time = WorkerTime()
    cpu_s = 0.0
    load_at_start = _load()
    with RemoteBadgr(work / "site", CLIENT_ID, secret) as badgr:
        world = build_demo(work, badgr.site_url, extra_learners=max(0, learners - len(PEOPLE)))
        for account in world.accounts:
            badgr.add_account(
                account.username, account.password, [(e.email, e.verified) for e in account.emails]
            )
        direct = BadgrClient(badgr.sandbox_url, CLIENT_ID, secret)
        for username, assertions in world.preimport.items():
            token = badgr.issue_token(username)["access_token"]
            for assertion_url in assertions:
                direct.import_badge(token, url=assertion_url)
        with LocalStack(
            ROOT,
            badgr_api_url=badgr.proxy_url,
            badgr_authorize_url=badgr.authorize_endpoint,
            badgr_client_secret=secret,
            env_overrides={
                **QUIET,
                "BADGR_CLIENT_ID": CLIENT_ID,
                "EMAILS_PER_SECOND": "1000",
                "BADGR_IMPORTS_PER_SECOND": BENCH_IMPORTS_PER_SECOND,
            },
            max_concurrency={"MigrateQueue": workers},
            schedule_scale=SCHEDULE_SCALE,
            dynamodb_process=dynamodb_process,
        ) as stack:
            reset_services()
            svc = get_services()
            table = stack.resource("Table")
            ids = {learner.email.strip().lower(): svc.learner_id(learner.email) for learner in world.learners}
            owner = {learner.email.strip().lower(): learner.account for learner in world.learners}
            total = len(world.expected)
            deadline = time.monotonic() + timeout_s
            with _Rss() as rss:
                started = time.monotonic()
                boto3.client("s3").upload_file(
                    str(world.zip_path), stack.resource("ExportsBucket"), "exports/bench.zip"
                )
                progress = _Progress()
                while time.monotonic() < deadline:
                    census = take_census(table, stack.census_url)
                    progress("intake", census)
                    if recorded_s is None and census.badge_count >= total:
                        recorded_s = time.monotonic() - started
                    if census.badge_count >= total and not census.badges.get("extracted"):
                        verified_s = time.monotonic() - started
                        break
                    time.sleep(0.5)
                intake_rss = (rss.samples[0], rss.peak)
                stack.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
                badgr.set_latency(LATENCY_S)
                badgr.routes(clear=True)
                load_at_start = _load()

                def connect(email: str) -> None:
                    tokens = badgr.issue_token(owner[email])
                    # As the OAuth callback does: the listing uses the tokens just stored.
                    stored = store_tokens(
                        svc,
                        ids[email],
                        Tokens(
                            access_token=tokens["access_token"],
                            refresh_token=tokens["refresh_token"],
                            expires_at=time.time() + tokens["expires_in"],
                            scope=tokens["scope"],
                        ),
                    )
                    request_migration(svc, ids[email], stored)

                with _counting_aws_calls() as calls, timing_migrate_workers() as worker_time:
                    cpu_before = _cpu_s()
                    moving = time.monotonic()
                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(connect, sorted(ids)))
                    while time.monotonic() < deadline:
                        census = take_census(table, stack.census_url)
                        progress("move", census)
                        if census.count(final) >= census.badge_count:
                            final_s = time.monotonic() - moving
                            break
                        time.sleep(0.5)
                    cpu_s = _cpu_s() - cpu_before
                sent = sum(
                    1
                    for b in (x for lid in set(ids.values()) for x in svc.store.list_badges(lid))
                    if b.import_form is not None
                )
                badgr_calls = badgr.routes()
                badgr_own_s = badgr.upstream_s()
            load_at_end = _load()
            reset_services()
    ideal = workers / LATENCY_S
    rate = sent / final_s if final_s else None
    if recorded_s is not None:
        part.rows.append(
            [
                "upload -> every badge recorded",
                f"{total:,}",
                f"{recorded_s:.0f}",
                f"{total / recorded_s:.1f}",
                "",
                "",
            ]
        )
    if verified_s is not None:
        part.rows.append(
            [
                "upload -> every badge verified",
                f"{total:,}",
                f"{verified_s:.0f}",
                f"{total / verified_s:.1f}",
                "",
                f"{intake_rss[0]:.0f} / {intake_rss[1]:.0f}",
            ]
        )
    if final_s is not None and rate is not None:
        part.rows.append(
            [
                "move -> every badge final",
                f"{sent:,} sent",
                f"{final_s:.0f}",
                f"{rate:.1f}",
                f"{100 * rate / ideal:.0f} % of {ideal:.1f}",
                f"{rss.samples[0]:.0f} / {rss.peak:.0f}",
            ]
        )
    badgr_total = sum(badgr_calls.values())
    part.notes.append(
        f"ideal = {workers} workers / {LATENCY_S} s = {ideal:.1f} badges/s; {badgr_total:,} Badgr calls for "
        f"{sent:,} imports ({badgr_total / max(1, sent):.2f} a badge: {_per_badge(badgr_calls, sent)})"
    )
    # Badgr's own time to import (the sandbox's work behind the proxy's added latency) bounds
    # the move as much as the latency does: no pipeline beats workers / (latency + that).
    imports = badgr_calls[IMPORT_ROUTE]
    own_import_s = badgr_own_s.get(IMPORT_ROUTE, 0.0) / imports if imports else None
    ideal_with_badgr: float | None = None
    if own_import_s is not None:
        ideal_with_badgr = workers / (LATENCY_S + own_import_s)
        if rate is not None:
            part.notes.append(
                f"Badgr's own time an import (the sandbox and the hop to it, behind the proxy's "
                f"{LATENCY_S} s): {1000 * own_import_s:.0f} ms; against {workers} workers / "
                f"({LATENCY_S} s + that) = {ideal_with_badgr:.1f} badges/s, the move reaches "
                f"{100 * rate / ideal_with_badgr:.0f} %"
            )
    part.notes.append(f"AWS calls a badge sent, during the move: {_per_badge(calls, sent)}")
    part.notes.append(worker_time.summary(sent, 1000 * LATENCY_S / 0.8))
    part.notes.append(
        f"CPU of this process (functions, local stack, moto; Badgr runs in its own) during the move: "
        f"{cpu_s:.0f} s in {final_s or 0:.0f} s "
        f"({1000 * cpu_s / max(1, sent):.0f} ms a badge sent)"
    )
    part.notes.append(
        f"BadgrImportsPerSecond set to {BENCH_IMPORTS_PER_SECOND} (the pipeline is measured, not the rate); "
        f"move started at {load_at_start}, ended at {load_at_end}"
    )
    part.figures = {
        "e2e_badges": total,
        "e2e_recorded_s": round(recorded_s, 1) if recorded_s else None,
        "e2e_verified_s": round(verified_s, 1) if verified_s else None,
        "e2e_migrate_workers": workers,
        "e2e_badges_per_s": round(rate, 2) if rate else None,
        "e2e_ideal_per_s": round(ideal, 2),
        "e2e_of_ideal": round(rate / ideal, 3) if rate else None,
        "e2e_badgr_calls_per_badge": round(badgr_total / max(1, sent), 2),
        "e2e_badgr_own_import_ms": round(1000 * own_import_s, 1) if own_import_s is not None else None,
        "e2e_of_ideal_with_badgr_time": (
            round(rate / ideal_with_badgr, 3) if rate and ideal_with_badgr is not None else None
        ),
        "e2e_rss_start_mb": round(rss.samples[0], 1),
        "e2e_rss_peak_mb": round(rss.peak, 1),
    }
    return part


def bench_whole_export(
    sizes: tuple[tuple[int, int], ...] = EXPORT_SIZES, timeout_s: float = 3600, dynamodb_process: bool = True
) -> Part:
    part = Part(
        "end to end: a whole export, upload to every badge recorded (intake and every chunk job)",
        headers=["export", "seconds", "learners/s", "badges/s", "RSS start / peak MB", "AWS calls a badge"],
    )
    for learners, badges in sizes:
        row, figures, note = _whole_export(learners, badges, timeout_s, dynamodb_process)
        part.rows.append(row)
        part.figures.update(figures)
        part.notes.append(note)
    return part


def _whole_export(
    learners: int, badges: int, timeout_s: float, dynamodb_process: bool
) -> tuple[list[str], dict[str, Any], str]:
    import boto3

    from backpack_migrate.services import reset_services
    from infra.local.demo import _quiet
    from infra.local.sample_export import write_large_export
    from infra.local.stack import LocalStack

    _quiet()
    name = f"{learners // 1000}k" if learners >= 1000 else str(learners)
    work = ROOT / ".local-stack" / "bench-e2e-export"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"export-{learners}-{badges}.zip"
    if not path.exists():
        write_large_export(path, learners, badges, "http://127.0.0.1:9/issuers", issuers=200)
    recorded_s: float | None = None
    census = None
    with LocalStack(
        ROOT,
        badgr_api_url="http://127.0.0.1:9",
        badgr_authorize_url="http://127.0.0.1:9/auth",
        badgr_client_secret="unused",
        env_overrides=QUIET,
        # Their jobs wait: the figure is intake's and the chunks' alone.
        max_concurrency={"VerifyQueue": 0, "NotifyQueue": 0},
        schedule_scale=SCHEDULE_SCALE,
        dynamodb_process=dynamodb_process,
    ) as stack:
        table = stack.resource("Table")
        load_at_start = _load()
        with _Rss() as rss, _counting_aws_calls() as calls:
            started = time.monotonic()
            boto3.client("s3").upload_file(str(path), stack.resource("ExportsBucket"), "exports/big.zip")
            deadline = started + timeout_s
            progress = _Progress()
            while time.monotonic() < deadline:
                counting = time.monotonic()
                census = take_census(table, stack.census_url)
                counted_s = time.monotonic() - counting
                progress(f"export {name}", census)
                if census.badge_count >= badges:
                    recorded_s = time.monotonic() - started
                    break
                # The census walks the whole table under moto's lock: paced so that, however
                # big the table grows, it holds the lock a twentieth of the time at most.
                time.sleep(max(1.0, 19 * counted_s))
        load_at_end = _load()
        reset_services()
    per_badge = sum(v for k, v in calls.items() if k.startswith("dynamodb:")) / max(1, badges)
    row = [
        f"{learners:,} learners / {badges:,} badges",
        f"{recorded_s:.0f}" if recorded_s else f"> {timeout_s:.0f}",
        f"{learners / recorded_s:.0f}" if recorded_s else "",
        f"{badges / recorded_s:.0f}" if recorded_s else "",
        f"{rss.samples[0]:.0f} / {rss.peak:.0f}",
        f"{per_badge:.2f} DynamoDB",
    ]
    recorded = census.badge_count if census else 0
    note = (
        f"{name}: {recorded:,} of {badges:,} badges recorded; AWS calls {_per_badge(calls, badges)} a badge; "
        f"{load_at_start} at the start, {load_at_end} at the end; moto's DynamoDB "
        + ("in its own process" if dynamodb_process else "in the stack's process")
    )
    figures = {
        f"e2e_export_{name}_s": round(recorded_s, 1) if recorded_s else None,
        f"e2e_export_{name}_learners_per_s": round(learners / recorded_s, 1) if recorded_s else None,
        f"e2e_export_{name}_badges_per_s": round(badges / recorded_s, 1) if recorded_s else None,
        f"e2e_export_{name}_peak_mb": round(rss.peak, 1),
    }
    return row, figures, note
