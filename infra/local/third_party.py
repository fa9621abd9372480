"""A third-party site of the Backpack era, for trying the old APIs against the local stack.

It serves, on its own origin (``localhost``, so another site than the stack's ``127.0.0.1``),
an issuer page that loads ``<stack>/issuer.js`` and calls ``OpenBadges.issue`` or
``OpenBadges.issue_no_modal``, and a Backpack Connect client that asks ``/access`` for a grant
and then sends a badge with ``POST /api/issue``. ``write_issued_badges`` writes the hosted
assertions it offers onto the local issuer site.
"""

from __future__ import annotations

import json
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.local.bakery import make_png
from infra.local.sample_export import hash_recipient
from infra.local.serving import LoopbackServer

V2 = "https://w3id.org/openbadges/v2"


def write_issued_badges(
    site_dir: Path, site_url: str, emails: list[str], prefix: str = "thirdparty"
) -> list[str]:
    """Hosted 2.0 assertions, one per email, issued by a small academy on the issuer site."""
    base = f"{site_url}/{prefix}"
    root = site_dir / prefix
    (root / "assertions").mkdir(parents=True, exist_ok=True)
    docs: dict[str, Any] = {
        "issuer.json": {
            "@context": V2,
            "type": "Issuer",
            "id": f"{base}/issuer.json",
            "name": "Third Party Academy",
            "url": site_url,
            "email": "badges@thirdparty.example",
        },
        "badge.json": {
            "@context": V2,
            "type": "BadgeClass",
            "id": f"{base}/badge.json",
            "name": "Issued after the Backpack",
            "description": "Issued through issuer.js or Backpack Connect.",
            "image": f"{base}/badge.png",
            "criteria": {"narrative": "Came back for more."},
            "issuer": f"{base}/issuer.json",
        },
    }
    urls = []
    for number, email in enumerate(emails, 1):
        url = f"{base}/assertions/{number}.json"
        docs[f"assertions/{number}.json"] = {
            "@context": V2,
            "type": "Assertion",
            "id": url,
            "recipient": {
                "type": "email",
                "hashed": True,
                "salt": f"salt{number}",
                "identity": hash_recipient(email, f"salt{number}"),
            },
            "badge": f"{base}/badge.json",
            "verification": {"type": "hosted"},
            "issuedOn": "2026-11-01T10:00:00+00:00",
        }
        urls.append(url)
    for name, doc in docs.items():
        (root / name).write_text(json.dumps(doc), encoding="utf-8")
    (root / "badge.png").write_bytes(make_png("#7a3db8"))
    return urls


def issuer_page(api_url: str, assertions: list[str]) -> str:
    listed = "".join(f"<li><code>{escape(a)}</code></li>" for a in assertions)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>An issuer's page</title>
<script src="{escape(api_url)}/issuer.js"></script></head><body>
<h1>An issuer's page, on another site</h1>
<p>Badges offered:</p><ul>{listed}</ul>
<button id="issue">OpenBadges.issue</button>
<button id="frameless">OpenBadges.issue_no_modal</button>
<p><a id="connect" href="#">Backpack Connect: ask for a grant</a></p>
<pre id="result"></pre>
<script>
  var assertions = {json.dumps(assertions)};
  document.getElementById("connect").href = "{escape(api_url)}/access?scope=issue&callback=" +
    encodeURIComponent(location.origin + "/connected?from=issuer-page");
  document.getElementById("issue").onclick = function () {{
    OpenBadges.issue(assertions, function (errors, successes) {{
      window.issued = {{errors: errors, successes: successes}};
      document.getElementById("result").textContent = JSON.stringify(window.issued, null, 2);
    }});
  }};
  document.getElementById("frameless").onclick = function () {{ OpenBadges.issue_no_modal(assertions); }};
</script></body></html>"""


def connected_page(assertions: list[str]) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Connected</title>
</head><body>
<h1>Backpack Connect client</h1><button id="send">POST /api/issue</button><pre id="result"></pre>
<script>
  var query = new URLSearchParams(location.search), assertions = {json.dumps(assertions)};
  document.getElementById("result").textContent =
    query.get("error") || "granted: " + !!query.get("access_token");
  document.getElementById("send").onclick = function () {{
    fetch(query.get("api_root") + "/issue", {{
      method: "POST",
      headers: {{"Authorization": "Bearer " + btoa(query.get("access_token")),
                 "Content-Type": "application/json"}},
      body: JSON.stringify({{badge: assertions[0]}})
    }}).then(function (r) {{
      return r.text().then(function (t) {{ return {{status: r.status, body: t}}; }});
    }})
      .then(function (answer) {{
        window.sent = answer;
        document.getElementById("result").textContent = JSON.stringify(answer);
      }});
  }};
</script></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = issuer_page(self.server.api_url, self.server.assertions)
        elif path == "/connected":
            body = connected_page(self.server.assertions)
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ThirdPartySite(LoopbackServer):
    """``with ThirdPartySite(api_url, assertions) as site: ... site.url ...`` on localhost."""

    thread_name = "third-party-site"

    def __init__(self, api_url: str, assertions: list[str], port: int = 0) -> None:
        super().__init__()
        self.api_url = api_url.rstrip("/")
        self.assertions = assertions
        self.port = port

    def _make_server(self) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.api_url = self.api_url  # type: ignore[attr-defined]
        server.assertions = self.assertions  # type: ignore[attr-defined]
        return server

    @property
    def url(self) -> str:
        # Another site than the stack's 127.0.0.1: browsers treat it as third party.
        return super().url.replace("127.0.0.1", "localhost", 1)


def start_for_local(run: Any, learner_email: str) -> ThirdPartySite:
    """The third-party site `make local` runs, offering new badges to one demo learner."""
    assertions = write_issued_badges(run.site.root_dir, run.site.url, [learner_email] * 3, "thirdparty-local")
    return ThirdPartySite(run.stack.url, assertions).start()
