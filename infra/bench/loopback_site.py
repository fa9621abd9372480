"""A generated Open Badges 2.0 export, hosted on 127.0.0.1 with added latency per request.

``generate_site`` writes the documents (issuer, badge class and image shared per issuer; one
hosted assertion per badge) under a folder; ``LoopbackSite`` serves that folder from a separate
process (so the site's threads do not compete with the verifier under test for the GIL), and
sleeps ``latency`` seconds before every answer, as a remote issuer would.

``python -m infra.bench.loopback_site ROOT --latency 0.02`` serves a folder by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.local.serving import KeptAliveHandler

OB2_CONTEXT = "https://w3id.org/openbadges/v2"
STATS_PATH = "/__bench/requests"


@dataclass(frozen=True)
class HostedBadge:
    url: str
    email: str
    issuer: int


def tiny_png(rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid 1x1 PNG, written here so the bench needs no image file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00" + bytes(rgb)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=None, separators=(",", ":")), encoding="utf-8")


def generate_site(
    root: Path,
    base_url: str,
    badges: int = 10_000,
    issuers: int = 200,
    learners: int = 2_000,
    seed: int = 20240501,
) -> list[HostedBadge]:
    """Writes a hosted 2.0 export under ``root`` (served at ``base_url``); returns its badges."""
    rng = random.Random(seed)
    base = base_url.rstrip("/")
    image = tiny_png()
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(issuers):
        folder = root / "issuers" / f"{i:04d}"
        (folder / "assertions").mkdir(parents=True, exist_ok=True)
        issuer_url = f"{base}/issuers/{i:04d}/issuer.json"
        _write_json(
            folder / "issuer.json",
            {
                "@context": OB2_CONTEXT,
                "type": "Issuer",
                "id": issuer_url,
                "name": f"Issuer {i}",
                "url": f"{base}/issuers/{i:04d}/",
                "email": f"badges@issuer{i}.example.org",
            },
        )
        _write_json(
            folder / "badge.json",
            {
                "@context": OB2_CONTEXT,
                "type": "BadgeClass",
                "id": f"{base}/issuers/{i:04d}/badge.json",
                "name": f"Badge of issuer {i}",
                "description": f"Awarded by issuer {i} for completing its course.",
                "image": f"{base}/issuers/{i:04d}/badge.png",
                "criteria": {"narrative": "Complete every module and the final project."},
                "issuer": issuer_url,
            },
        )
        (folder / "badge.png").write_bytes(image)
    hosted: list[HostedBadge] = []
    for n in range(badges):
        i = n % issuers
        email = f"learner{rng.randrange(learners):05d}@example.net"
        salt = f"{rng.getrandbits(64):016x}"
        url = f"{base}/issuers/{i:04d}/assertions/{n:06d}.json"
        issued = now - timedelta(days=rng.randrange(1, 3000), seconds=rng.randrange(86_400))
        _write_json(
            root / "issuers" / f"{i:04d}" / "assertions" / f"{n:06d}.json",
            {
                "@context": OB2_CONTEXT,
                "type": "Assertion",
                "id": url,
                "recipient": {
                    "type": "email",
                    "hashed": True,
                    "salt": salt,
                    "identity": "sha256$" + hashlib.sha256((email + salt).encode()).hexdigest(),
                },
                "badge": f"{base}/issuers/{i:04d}/badge.json",
                "verification": {"type": "hosted"},
                "issuedOn": issued.isoformat().replace("+00:00", "Z"),
            },
        )
        hosted.append(HostedBadge(url=url, email=email, issuer=i))
    return hosted


class _Handler(KeptAliveHandler):
    server: _Site

    def do_GET(self) -> None:
        site = self.server
        if self.path == STATS_PATH:
            self._send(HTTPStatus.OK, json.dumps({"requests": site.count}).encode(), "application/json")
            return
        with site.lock:
            site.count += 1
        time.sleep(site.latency)
        relative = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
        target = (site.root / relative).resolve()
        if site.root not in target.parents or not target.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        ctype = "image/png" if target.suffix == ".png" else "application/ld+json"
        self._send(HTTPStatus.OK, target.read_bytes(), ctype)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Site(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, root: Path, latency: float, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root.resolve()
        self.latency = latency
        self.count = 0
        self.lock = threading.Lock()


class LoopbackSite:
    """Serves ``root`` on 127.0.0.1 from a child process; use as a context manager."""

    def __init__(self, root: Path, latency: float = 0.02) -> None:
        self.root = root
        self.latency = latency
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackSite:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infra.bench.loopback_site",
                str(self.root),
                "--latency",
                str(self.latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the loopback site did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def requests_served(self) -> int:
        with urllib.request.urlopen(self.base_url + STATS_PATH, timeout=5) as response:
            return int(json.loads(response.read())["requests"])

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a folder on 127.0.0.1 with added latency.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    site = _Site(args.root, args.latency, args.port)
    print(f"PORT {site.server_address[1]}", flush=True)
    try:
        site.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        site.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
