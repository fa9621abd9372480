"""Badgr and the issuers' sites for the end-to-end bench, in a process of their own.

Badgr is a remote service. The sandbox verifies every import as Badgr does (it fetches the
assertion, its badge class, issuer and image from the issuers' sites), and in the bench's own
process that work took the GIL from the pipeline being measured: the figure was the sandbox's
as much as ours. Here the sandbox, the chaos proxy in front of it (which adds the 300 ms) and
the issuers' sites run in a child process, driven over its stdin and stdout, one JSON line a
command and one an answer.

``python -m infra.bench.remote_badgr SITE_DIR CLIENT_ID`` (the client secret comes first on
stdin, so it is never in a process listing) is the child; :class:`RemoteBadgr` starts and
drives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


class RemoteBadgr:
    """The child process, seen from the bench: URLs, accounts, tokens, latency, call counts."""

    def __init__(self, site_dir: Path, client_id: str, client_secret: str) -> None:
        self._args = [sys.executable, "-m", "infra.bench.remote_badgr", str(site_dir), client_id]
        self._secret = client_secret
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.site_url = self.sandbox_url = self.proxy_url = ""

    def __enter__(self) -> RemoteBadgr:
        self._process = subprocess.Popen(
            self._args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._write(self._secret)
        urls = self._read()
        self.site_url, self.sandbox_url, self.proxy_url = urls["site"], urls["sandbox"], urls["proxy"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.sandbox_url}/auth/oauth2/authorize"

    def _write(self, line: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def _read(self) -> Any:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the Badgr process ended")
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"the Badgr process failed: {answer['error']}")
        return answer

    def _ask(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._write(json.dumps({"op": op, **args}))
            return self._read()

    def add_account(self, username: str, password: str, emails: list[tuple[str, bool]]) -> None:
        self._ask("add_account", username=username, password=password, emails=emails)

    def issue_token(self, username: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._ask("issue_token", username=username)
        return answer

    def set_latency(self, seconds: float) -> None:
        self._ask("latency", seconds=seconds)

    def routes(self, clear: bool = False) -> Counter[str]:
        """Badgr calls through the proxy, by method and route (and forget them, and the time
        upstream, if asked)."""
        return Counter(self._ask("routes", clear=clear))

    def upstream_s(self) -> dict[str, float]:
        """Seconds the calls counted by :meth:`routes` spent upstream of the proxy, by route:
        the sandbox's work and the hop to it, without the latency the proxy adds."""
        return {route: float(seconds) for route, seconds in self._ask("upstream").items()}


def _serve(site_dir: Path, client_id: str, stdin: IO[str], stdout: IO[str]) -> int:
    from infra.chaos.faults import FaultyBadgr
    from infra.local.badgr_sandbox import BadgrSandbox
    from infra.local.issuer_site import IssuerSite

    secret = stdin.readline().strip()

    def say(answer: Any) -> None:
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()

    with (
        IssuerSite(site_dir) as site,
        BadgrSandbox(client_id, secret, redirect_uris=[]) as sandbox,
        FaultyBadgr(sandbox.url, 0.0, 0) as proxy,
    ):
        say({"site": site.url, "sandbox": sandbox.url, "proxy": proxy.url})
        for line in stdin:
            command = json.loads(line)
            op = command.pop("op")
            try:
                if op == "add_account":
                    emails = [(email, bool(verified)) for email, verified in command["emails"]]
                    sandbox.add_account(command["username"], command["password"], emails)
                    say({})
                elif op == "issue_token":
                    say(sandbox.issue_token(command["username"]))
                elif op == "latency":
                    proxy.extra_latency_s = float(command["seconds"])
                    say({})
                elif op == "routes":
                    say(proxy.taken(clear=bool(command.get("clear")))[0])
                elif op == "upstream":
                    say(proxy.taken()[1])
                else:
                    say({"error": f"unknown command {op!r}"})
            except Exception as exc:  # the bench is told, and the child goes on
                say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve(Path(sys.argv[1]), sys.argv[2], sys.stdin, sys.stdout))
