"""The faults of a chaos run, each decided by one seeded random stream.

* :class:`FaultyBadgr`: a proxy in front of the Badgr sandbox answering 500/502/503, 429 with
  ``Retry-After``, hanging past the client's timeout, resetting the connection, or passing the
  call on and losing the answer after Badgr acted on it;
* :class:`WorkerKiller`: invocations that die at a random AWS call of theirs (mid-batch);
* :class:`AwsThrottle`: DynamoDB and SQS calls made by the functions refused as throttled.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from http.server import HTTPServer, ThreadingHTTPServer
from typing import Any

import requests
from botocore.exceptions import ClientError

from infra.local.lambda_runtime import FunctionSpec
from infra.local.serving import KeptAliveHandler, LoopbackServer

BADGR_FAULTS = {"500": 1, "502": 1, "503": 1, "429": 2, "hang": 1, "reset": 1, "lost": 2}


class _Dice:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def chance(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    def choice(self, weights: dict[str, int]) -> str:
        with self._lock:
            return self._rng.choices(list(weights), weights=list(weights.values()))[0]

    def uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self._rng.randint(low, high)


class FaultyBadgr(LoopbackServer):
    """Forwards to ``upstream``; a share ``rate`` of API calls (``/v2/``) meets a fault instead.

    OAuth (``/o/``) passes untouched, so the learners' sign-in always completes.
    """

    thread_name = "chaos-badgr-proxy"
    poll_interval = 0.05

    def __init__(self, upstream: str, rate: float, seed: int, hang_s: float = 11.0) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.hang_s = hang_s  # longer than the Badgr client's 10 s timeout
        self.extra_latency_s = 0.0  # added to every call (the benchmark's slow Badgr)
        self._dice = _Dice(seed)
        self.injected: Counter[str] = Counter()
        self.calls = 0
        self.by_route: Counter[str] = Counter()  # calls per method and path (ids and query left out)
        # Seconds forwarded calls spent upstream, per route, as the proxy saw them: the sandbox's
        # work and the hop to it, without the latency added here.
        self.upstream_s: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._session = requests.Session()

    def _make_server(self) -> HTTPServer:
        proxy = self

        class Handler(KeptAliveHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.extra_latency_s:
                    time.sleep(proxy.extra_latency_s)
                proxy.count(self.command, self.path)
                fault = proxy.decide(self.path)
                if fault in ("500", "502", "503"):
                    self._answer(int(fault), b'{"status":{"success":false}}', {})
                    return
                if fault == "429":
                    self._answer(429, b"", {"Retry-After": str(proxy._dice.randint(1, 3))})
                    return
                if fault == "hang":
                    time.sleep(proxy.hang_s)
                    self._reset()
                    return
                if fault == "reset":
                    self._reset()
                    return
                status, headers, payload = proxy.forward(self.command, self.path, self.headers, body)
                if fault == "lost":  # Badgr did it; the answer never arrives
                    self._reset()
                    return
                self._answer(status, payload, headers)

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _reset(self) -> None:
                # SO_LINGER 0: close with a RST, as a dropped connection looks to the client.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def taken(self, clear: bool = False) -> tuple[dict[str, int], dict[str, float]]:
        """The calls by route and the time upstream by route, read together (and forgotten, if
        asked) while no handler adds to them."""
        with self._lock:
            calls, upstream = dict(self.by_route), dict(self.upstream_s)
            if clear:
                self.by_route.clear()
                self.upstream_s.clear()
        return calls, upstream

    @staticmethod
    def route_of(method: str, path: str) -> str:
        return f"{method} {'/'.join(path.split('?', 1)[0].split('/')[:4])}"

    def count(self, method: str, path: str) -> None:
        with self._lock:
            self.by_route[self.route_of(method, path)] += 1

    def decide(self, path: str) -> str | None:
        with self._lock:
            self.calls += 1
        if not path.startswith("/v2/") or not self._dice.chance(self.rate):
            return None
        fault = self._dice.choice(BADGR_FAULTS)
        with self._lock:
            self.injected[fault] += 1
        return fault

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in {"host", "content-length", "connection"}}
        started = time.perf_counter()
        answer = self._session.request(
            method, self.upstream + path, headers=sent, data=body, timeout=30, allow_redirects=False
        )
        content = answer.content
        with self._lock:
            self.upstream_s[self.route_of(method, path)] += time.perf_counter() - started
        return answer.status_code, dict(answer.headers), content


class WorkerKiller:
    """Kills a share ``rate`` of the named functions' invocations at one of their first AWS calls."""

    def __init__(self, rate: float, seed: int, functions: set[str], max_call: int = 12) -> None:
        self.rate = rate
        self.functions = functions
        self.max_call = max_call
        self._dice = _Dice(seed)

    def __call__(self, function: FunctionSpec) -> int | None:
        if function.logical_id not in self.functions or not self._dice.chance(self.rate):
            return None
        return self._dice.randint(1, self.max_call)


class AwsThrottle:
    """An aws_calls hook: a share ``rate`` of the functions' DynamoDB and SQS calls is refused as
    throttled, after the SDK's own retries (so the code sees it)."""

    CODES = {"dynamodb": "ProvisionedThroughputExceededException", "sqs": "ThrottlingException"}

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self._dice = _Dice(seed)
        self.throttled: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        code = self.CODES.get(service)
        if code is None or not self._dice.chance(self.rate):
            return None
        with self._lock:
            self.throttled[f"{service}:{operation}"] += 1
        answer: Any = {
            "Error": {"Code": code, "Message": "Rate exceeded (injected)"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        raise ClientError(answer, operation)
