"""What the Backpack's old APIs have in common: answers, formats, JSONP, and a record of each call.

The Backpack answered third-party sites in its own ways (a 400 in text/plain for an unknown
format, JSONP that forces 200, CORS on some paths only); those ways are kept here, once, so each
API module only says what it answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .observability import logger, metrics

# Every answer but the issuer frame refuses to be framed.
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers send "Origin: null" even on our own form posts.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PAGE_CSP = (
    "default-src 'none'; img-src 'self' https: http: data:; style-src 'unsafe-inline'; form-action 'self'"
)
IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"

# A JavaScript identifier path (``cb``, ``jQuery123_456``, ``a.b.c``): nothing that could close
# the call and start a statement of its own.
_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,4}")


@dataclass
class Reply:
    status: int
    body: str | bytes = ""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None  # set the session cookie to this
    outcome: str = ""  # what happened, for the record; defaults to the status

    @property
    def all_headers(self) -> dict[str, str]:
        merged = dict(BASE_HEADERS)
        merged.update(self.headers)
        return {k: v for k, v in merged.items() if v}


class FormatError(Exception):
    """The client asked for a format the Backpack had no formatter for."""


def json_reply(status: int, value: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")), headers=dict(headers))


def text_reply(status: int, text: str, **headers: str) -> Reply:
    return Reply(status, text, content_type="text/plain; charset=utf-8", headers=dict(headers))


def wants_json(path: str, accept: str | None) -> bool:
    """The Backpack's rule: ``.json``/``.jsonp`` paths and requests without Accept get JSON;
    otherwise Accept must take application/json, as content negotiation reads it (``*/*`` and
    ``application/*`` do, which is what curl and browsers send)."""
    if path.endswith((".json", ".jsonp")) or not accept:
        return True
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if media.lower() in ("application/json", "application/*", "*/*") and not refused:
            return True
    return False


def valid_callback(name: str | None) -> bool:
    return bool(name) and _CALLBACK.fullmatch(name or "") is not None


def with_jsonp(reply: Reply, callback: str | None) -> Reply:
    """``callback(<json>)`` with status 200, as the Backpack answered; a callback name that is not
    a plain identifier gets a 400 instead of being echoed into a script."""
    if not callback:  # absent or empty, as the Backpack read it: no JSONP
        return reply
    if not valid_callback(callback):
        return json_reply(400, {"status": "invalid", "error": "invalid `callback` parameter"})
    body = reply.body.decode() if isinstance(reply.body, bytes) else reply.body
    return Reply(
        200,
        f"/**/{callback}({body});",
        content_type="application/json; charset=utf-8",
        headers=dict(reply.headers),
        outcome=reply.outcome or str(reply.status),
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def record_call(api: str, route: str, client_origin: str | None, reply: Reply, started: float) -> None:
    """One log line and metrics per call, by API and client origin; never an email or a token."""
    outcome = reply.outcome or str(reply.status)
    origin = client_origin or "none"
    logger.info(
        "legacy api call",
        extra={
            "api": api,
            "route": route,
            "client_origin": origin,
            "status": reply.status,
            "outcome": outcome,
            "ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    metrics.add_metric(name=f"Legacy_{api}_{outcome}", unit="Count", value=1)
    # Per client origin in a metric of its own, so the origin dimension never multiplies the
    # function's other series.
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    from .observability import NAMESPACE

    with single_metric(name="LegacyCalls", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="api", value=api)
        metric.add_dimension(name="client_origin", value=origin[:250])
