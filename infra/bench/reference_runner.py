"""Runs IMS's reference validator on a batch of inputs; executed INSIDE the reference environment.

Standalone on purpose: it imports only the standard library, ``openbadges`` and ``responses``.
It reads one JSON job on stdin and prints one JSON line of verdicts and timings::

    {
      "mode": "serve" | "passthrough",
      "contexts": {URL: {"file": PATH} | {"body": TEXT}},         # intercepted in both modes
      "passthrough": ["http://127.0.0.1:PORT/"],                   # "passthrough" mode: real HTTP
      "fallback": {"image_pattern": REGEX, "image_file": PATH,     # "serve" mode, for URLs that
                   "unknown_status": 404},                         # no item serves
      "warmup": 1,                                                 # untimed runs of the first items
      "warmup_items": [ITEM, ...],                                 # or these, untimed
      "stats_url": URL,                         # the loopback site's request counter, read around the run
      "items": [{"name": STR,
                 "input": {"url": URL} | {"file": PATH} | {"text_file": PATH} | {"text": STR},
                 "recipient": {"email": ...} | null,
                 "serve": {URL: {"status": 200, "content_type": CT, "file": PATH | "body": STR}}}]
    }

In "serve" mode every HTTP request is answered from the item's ``serve`` map, the contexts and
the fallback; nothing reaches the network. In "passthrough" mode only the contexts are
intercepted and requests to the listed prefixes go out for real (the loopback issuer site).
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from typing import Any

_ERROR_LEVEL = "ERROR"


def _load(spec: dict[str, Any]) -> bytes:
    if "file" in spec:
        with open(spec["file"], "rb") as handle:
            return handle.read()
    body = spec.get("body", "")
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _content_type(spec: dict[str, Any]) -> str:
    if spec.get("content_type"):
        return str(spec["content_type"])
    name = str(spec.get("file", ""))
    if name.endswith(".png"):
        return "image/png"
    if name.endswith(".svg"):
        return "image/svg+xml"
    if name.endswith(".json"):
        return "application/ld+json"
    return "text/plain"


class Server:
    """One ``responses`` callback for every URL: the table changes per item, no re-registration."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.contexts = {
            url: (200, _content_type(spec), _load(spec)) for url, spec in job["contexts"].items()
        }
        fallback = job.get("fallback") or {}
        self.image_pattern = re.compile(fallback["image_pattern"]) if fallback.get("image_pattern") else None
        self.image = (
            (200, "image/png", _load({"file": fallback["image_file"]})) if self.image_pattern else None
        )
        self.unknown_status = int(fallback.get("unknown_status", 404))
        self.table: dict[str, tuple[int, str, bytes]] = {}
        self.requests = 0

    def set_item(self, item: dict[str, Any]) -> None:
        self.table = {
            url: (int(spec.get("status", 200)), _content_type(spec), _load(spec))
            for url, spec in (item.get("serve") or {}).items()
        }

    def answer(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.requests += 1
        url = str(request.url)
        for candidate in (url, url.split("#", 1)[0], url.split("?", 1)[0], url.rstrip("/")):
            hit = self.table.get(candidate) or self.contexts.get(candidate)
            if hit:
                status, ctype, body = hit
                return status, {"Content-Type": ctype}, body
        if self.image_pattern and self.image and self.image_pattern.search(url):
            return self.image[0], {"Content-Type": self.image[1]}, self.image[2]
        return self.unknown_status, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>"


def _verify_one(openbadges: Any, item: dict[str, Any]) -> tuple[bool | None, list[str], float, str]:
    spec = item["input"]
    recipient = item.get("recipient") or None
    handle = None
    try:
        if "url" in spec:
            badge_input: Any = spec["url"]
        elif "text" in spec:
            badge_input = spec["text"]
        elif "text_file" in spec:
            with open(spec["text_file"], encoding="utf-8") as text:
                badge_input = text.read().strip()
        else:
            handle = open(spec["file"], "rb")  # noqa: SIM115 - closed below, outside the timing
            badge_input = handle
        started = time.perf_counter()
        try:
            report = openbadges.verify(badge_input, recipient_profile=recipient)
        except Exception as exc:
            return False, [f"EXCEPTION:{type(exc).__name__}: {exc}"[:200]], time.perf_counter() - started, ""
        elapsed = time.perf_counter() - started
    finally:
        if handle is not None:
            handle.close()
    body = report.get("report", {})
    errors = [
        f"{m.get('name')}:{str(m.get('result', ''))[:120]}"
        for m in body.get("messages", [])
        if m.get("messageLevel") == _ERROR_LEVEL
    ]
    version = str(body.get("openBadgesVersion") or "")
    return bool(body.get("valid")), errors, elapsed, version


def run(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import openbadges
    import responses

    import_s = time.perf_counter() - started
    server = Server(job)
    mode = job.get("mode", "serve")
    results: list[dict[str, Any]] = []
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        if mode == "passthrough":
            for prefix in job.get("passthrough", []):
                mock.add_passthru(prefix)
            pattern = "^(" + "|".join(re.escape(url) for url in server.contexts) + ")$"
            mock.add_callback(responses.GET, re.compile(pattern), callback=server.answer)
        else:
            mock.add_callback(responses.GET, re.compile(r".*"), callback=server.answer)
        items = job["items"]
        warmup_items = job.get("warmup_items") or items[: int(job.get("warmup", 1))]
        for item in warmup_items:
            server.set_item(item)
            _verify_one(openbadges, item)
        server.requests = 0
        site_before = _site_count(job.get("stats_url"))
        for item in items:
            server.set_item(item)
            valid, errors, elapsed, version = _verify_one(openbadges, item)
            results.append(
                {
                    "name": item.get("name"),
                    "valid": valid,
                    "seconds": elapsed,
                    "errors": errors,
                    "version": version,
                }
            )
        site_after = _site_count(job.get("stats_url"))
    return {
        "ok": True,
        "python": platform.python_version(),
        "openbadges": getattr(openbadges, "__version__", None) or _dist_version("openbadges"),
        "import_s": import_s,
        "verify_s": sum(r["seconds"] for r in results),
        "wall_s": time.perf_counter() - started,
        "intercepted_requests": server.requests,
        "site_requests": None if site_before is None or site_after is None else site_after - site_before,
        "results": results,
    }


def _site_count(url: str | None) -> int | None:
    """Requests the loopback site has served so far (read with urllib: responses does not see it)."""
    if not url:
        return None
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(json.loads(answer.read())["requests"])


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def main() -> int:
    job = json.load(sys.stdin)
    result = run(job)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
