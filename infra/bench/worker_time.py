"""Where a migrate worker's time goes, badge by badge: Badgr's answers, AWS's, and the rest.

The move's rate is set by how long one worker takes over a badge, since each worker handles its
batch one job after another. The block times, on the migrate queue's worker threads only, each
batch from its invocation to its settlement, each HTTP call to Badgr, and each AWS call, so the bench can
say how a badge's time divides and how far the rest is from what the ideal leaves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

WORKER_PREFIX = "local-sqs-MigrateQueue-"
BADGR_PATHS = ("/v2/", "/o/")  # Badgr's API and its OAuth endpoints


@dataclass
class WorkerTime:
    """Seconds spent by the migrate workers, summed over them, and how many calls of each."""

    busy_s: float = 0.0
    badgr_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    badgr_calls: Counter[str] = field(default_factory=Counter)
    aws_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    aws_calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: defaultdict[str, float], calls: Counter[str], key: str, spent: float) -> None:
        with self._lock:
            seconds[key] += spent
            calls[key] += 1

    def add_busy(self, spent: float) -> None:
        with self._lock:
            self.busy_s += spent

    def summary(self, badges: int, budget_ms: float) -> str:
        """One line: a badge's share of each, in ms, and the rest against ``budget_ms``."""
        per = 1000 / max(1, badges)
        badgr = sum(self.badgr_s.values()) * per
        aws = sum(self.aws_s.values()) * per
        busy = self.busy_s * per
        rest = busy - badgr - aws
        badgr_parts = ", ".join(f"{k} {v * per:.0f}" for k, v in _largest(self.badgr_s, 3))
        aws_parts = ", ".join(
            f"{k} {self.aws_calls[k] / max(1, badges):.2f} x {1000 * v / max(1, self.aws_calls[k]):.0f} ms"
            for k, v in _largest(self.aws_s, 4)
        )
        return (
            f"a migrate worker's time a badge sent: {busy:.0f} ms = Badgr {badgr:.0f} ms ({badgr_parts}) "
            f"+ AWS {aws:.0f} ms ({aws_parts}) + the rest {rest:.0f} ms; "
            f"80 % of the ideal leaves {budget_ms:.0f} ms a badge"
        )


def _largest(spent: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(spent.items(), key=lambda item: -item[1])[:n]


_in_batch = threading.local()


def _in_migrate_batch() -> bool:
    """On a migrate worker, inside a batch (its long polls for the next batch are not a badge's)."""
    return bool(getattr(_in_batch, "on", False))


@contextmanager
def timing_migrate_workers() -> Iterator[WorkerTime]:
    """Time the migrate workers while the block runs (patches undone when it ends)."""
    import requests
    from botocore.client import BaseClient

    from infra.local.sqs_poller import SqsPollers

    spent = WorkerTime()
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        patched.append((owner, name, original))
        setattr(owner, name, make(original))

    def timed_batch(original: Any) -> Any:
        def process_batch(self: Any, source: Any, messages: Any) -> Any:
            if not threading.current_thread().name.startswith(WORKER_PREFIX):
                return original(self, source, messages)
            started = time.perf_counter()
            _in_batch.on = True
            try:
                return original(self, source, messages)
            finally:
                _in_batch.on = False
                spent.add_busy(time.perf_counter() - started)

        return process_batch

    def timed_http(original: Any) -> Any:
        def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            path = urlsplit(url).path
            if not _in_migrate_batch() or not path.startswith(BADGR_PATHS):
                # Other sites (an issuer's, fetched by a late verification) are the rest's.
                return original(self, method, url, *args, **kwargs)
            started = time.perf_counter()
            try:
                return original(self, method, url, *args, **kwargs)
            finally:
                key = f"{method} {path}"
                spent.add(spent.badgr_s, spent.badgr_calls, key, time.perf_counter() - started)

        return request

    def timed_aws(original: Any) -> Any:
        def make_api_call(client: Any, operation: str, params: Any) -> Any:
            if not _in_migrate_batch():
                return original(client, operation, params)
            started = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                spent.add(spent.aws_s, spent.aws_calls, operation, time.perf_counter() - started)

        return make_api_call

    patch(SqsPollers, "_process_batch", timed_batch)
    patch(requests.Session, "request", timed_http)
    patch(BaseClient, "_make_api_call", timed_aws)
    try:
        yield spent
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
