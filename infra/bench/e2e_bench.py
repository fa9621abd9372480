"""End to end on the local stack: an export from upload to every badge recorded, then every
learner's badges from the move to every badge final, with Badgr 300 ms away.

The Badgr sandbox sits behind the chaos proxy with no faults and 300 ms added to every call, and
the migrate queue runs a stated number of workers, so the ideal is ``workers / 0.3 s``: the
figure is how close the migration comes to it. Learners connect Badgr through the same code the
OAuth callback runs (``store_tokens`` and ``request_migration``), without the browser round trip.
Memory is the whole process (stack, moto, sandbox and all), sampled every half second.
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from infra.bench.common import Part

ROOT = Path(__file__).resolve().parents[2]
LATENCY_S = 0.3


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


def bench_end_to_end(learners: int = 1000, workers: int = 8, timeout_s: float = 3600) -> Part:
    import boto3

    from backpack_migrate.badgr import BadgrClient, Tokens
    from backpack_migrate.domain import FINAL_STATES
    from backpack_migrate.migration import request_migration, store_tokens
    from backpack_migrate.services import get_services, reset_services
    from infra.chaos.faults import FaultyBadgr
    from infra.local.badgr_sandbox import BadgrSandbox
    from infra.local.demo import CLIENT_ID, _quiet
    from infra.local.issuer_site import IssuerSite
    from infra.local.sample_export import PEOPLE, build_demo
    from infra.local.stack import LocalStack

    _quiet()
    part = Part(
        f"end to end: {learners:,} learners x 5 badges on the local stack, Badgr +300 ms, "
        f"{workers} migrate workers",
        headers=["phase", "badges", "seconds", "badges/s", "of ideal", "RSS start / peak MB"],
    )
    work = ROOT / ".local-stack" / "bench-e2e"
    (work / "site").mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    with IssuerSite(work / "site") as site:
        world = build_demo(work, site.url, extra_learners=max(0, learners - len(PEOPLE)))
        with (
            BadgrSandbox(CLIENT_ID, secret, redirect_uris=[]) as sandbox,
            FaultyBadgr(sandbox.url, 0.0, 0) as proxy,
        ):
            for account in world.accounts:
                sandbox.add_account(
                    account.username, account.password, [(e.email, e.verified) for e in account.emails]
                )
            direct = BadgrClient(sandbox.url, CLIENT_ID, secret)
            for username, assertions in world.preimport.items():
                token = sandbox.issue_token(username)["access_token"]
                for assertion_url in assertions:
                    direct.import_badge(token, url=assertion_url)
            with LocalStack(
                ROOT,
                badgr_api_url=proxy.url,
                badgr_authorize_url=sandbox.authorize_endpoint,
                badgr_client_secret=secret,
                env_overrides={"BADGR_CLIENT_ID": CLIENT_ID, "EMAILS_PER_SECOND": "1000"},
                max_concurrency={"MigrateQueue": workers},
            ) as stack:
                reset_services()
                svc = get_services()
                ids = {
                    learner.email.strip().lower(): svc.learner_id(learner.email) for learner in world.learners
                }
                owner = {learner.email.strip().lower(): learner.account for learner in world.learners}
                total = len(world.expected)
                deadline = time.monotonic() + timeout_s

                def badges() -> list[Any]:
                    return [b for lid in set(ids.values()) for b in svc.store.list_badges(lid)]

                with _Rss() as rss:
                    started = time.monotonic()
                    boto3.client("s3").upload_file(
                        str(world.zip_path), stack.resource("ExportsBucket"), "exports/bench.zip"
                    )
                    recorded_s = verified_s = None
                    while time.monotonic() < deadline:
                        found = badges()
                        if recorded_s is None and len(found) >= total:
                            recorded_s = time.monotonic() - started
                        if len(found) >= total and all(b.state.value != "extracted" for b in found):
                            verified_s = time.monotonic() - started
                            break
                        time.sleep(2)
                    intake_rss = (rss.samples[0], max(rss.samples))
                    proxy.extra_latency_s = LATENCY_S
                    calls_before = proxy.calls
                    moving = time.monotonic()

                    def connect(email: str) -> None:
                        tokens = sandbox.issue_token(owner[email])
                        store_tokens(
                            svc,
                            ids[email],
                            Tokens(
                                access_token=tokens["access_token"],
                                refresh_token=tokens["refresh_token"],
                                expires_at=time.time() + tokens["expires_in"],
                                scope=tokens["scope"],
                            ),
                        )
                        request_migration(svc, ids[email])

                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(connect, sorted(ids)))
                    final_s = None
                    while time.monotonic() < deadline:
                        found = badges()
                        if all(b.state in FINAL_STATES for b in found):
                            final_s = time.monotonic() - moving
                            break
                        time.sleep(1)
                    found = badges()
                    sent = sum(1 for b in found if b.import_form is not None)
                    calls = proxy.calls - calls_before
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
                f"{rss.samples[0]:.0f} / {max(rss.samples):.0f}",
            ]
        )
    part.notes.append(
        f"ideal = {workers} workers / {LATENCY_S} s = {ideal:.1f} badges/s; {calls:,} Badgr calls for "
        f"{sent:,} imports ({calls / max(1, sent):.2f} a badge)"
    )
    part.figures = {
        "e2e_badges": total,
        "e2e_recorded_s": round(recorded_s, 1) if recorded_s else None,
        "e2e_verified_s": round(verified_s, 1) if verified_s else None,
        "e2e_migrate_workers": workers,
        "e2e_badges_per_s": round(rate, 2) if rate else None,
        "e2e_ideal_per_s": round(ideal, 2),
        "e2e_of_ideal": round(rate / ideal, 3) if rate else None,
        "e2e_rss_start_mb": round(rss.samples[0], 1),
        "e2e_rss_peak_mb": round(max(rss.samples), 1),
    }
    return part
