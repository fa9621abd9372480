"""HTML and scripts of the Backpack's old issuer pages: ``issuer.js``, the modal frame, consent pages.

Scripts are static text, so each page's Content-Security-Policy names its script by hash.
Everything a page shows of a badge is set as text (escaped here, ``textContent`` in scripts).
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:40rem;margin:1.5rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.4rem}ul.badges{list-style:none;padding:0}
li.badge{border-bottom:1px solid #ddd;padding:.6rem 0}.ok{color:#1a7f37}.bad{color:#b42318}
button{font-size:1rem;padding:.5rem 1rem;border-radius:.4rem;border:0;background:#0b57d0;color:#fff;
margin-right:.5rem}
button.secondary{background:#5f6368}
"""


def script_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def page_layout(title: str, body: str, script: str | None = None) -> str:
    tag = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{tag}</body></html>"
    )


ISSUER_JS = r"""/* OpenBadges.issue and OpenBadges.issue_no_modal, as the Mozilla Backpack had them. */
(function () {
  "use strict";
  if (window.OpenBadges && window.OpenBadges.issue) return;
  var SCOPE = "OpenBadges.issue";
  function findRoot() {
    var script = document.currentScript, src = script && script.src;
    if (!src) {
      var scripts = document.getElementsByTagName("script");
      for (var i = scripts.length - 1; i >= 0; i--) {
        if (/\/issuer\.js(\?.*)?$/.test(scripts[i].src)) { src = scripts[i].src; break; }
      }
    }
    return src ? src.replace(/issuer\.js(\?.*)?$/, "") : "/";
  }
  var root = findRoot();
  var rootOrigin = new URL(root, location.href).origin;
  function list(assertions) {
    if (typeof assertions === "string") return [assertions];
    return Array.prototype.slice.call(assertions || []);
  }
  function denied(items) {
    return items.map(function (a) { return {assertion: a, reason: "DENIED"}; });
  }
  function issue(assertions, callback) {
    callback = typeof callback === "function" ? callback : function () {};
    var items = list(assertions), finished = false, asked = false, callId = 1;
    var overlay = document.createElement("div");
    overlay.setAttribute("style", "position:fixed;top:0;left:0;right:0;bottom:0;background:rgba(0,0,0,.55);" +
      "z-index:2147483647;display:flex;align-items:center;justify-content:center");
    var frame = document.createElement("iframe");
    frame.setAttribute("title", "Add badges to your backpack");
    frame.setAttribute("style", "width:640px;max-width:95vw;height:560px;max-height:90vh;border:0;" +
      "border-radius:8px;background:#fff");
    frame.src = root + "issuer/frame?" + Date.now();
    overlay.appendChild(frame);
    function finish(result) {
      if (finished) return;
      finished = true;
      window.removeEventListener("message", onMessage);
      document.removeEventListener("keydown", onKey);
      if (overlay.parentNode) overlay.parentNode.removeChild(overlay);
      callback(result[0], result[1]);
    }
    function post(message) { frame.contentWindow.postMessage(JSON.stringify(message), rootOrigin); }
    function onMessage(event) {
      if (event.source !== frame.contentWindow || event.origin !== rootOrigin) return;
      var m;
      try { m = JSON.parse(event.data); } catch (e) { return; }
      if (!m) return;
      if (m.method === SCOPE + "::__ready") {
        if (m.params === "ping") post({method: SCOPE + "::__ready", params: "pong"});
        if (!asked) { asked = true; post({id: callId, method: SCOPE + "::issue", params: items}); }
      } else if (m.id === callId && Object.prototype.hasOwnProperty.call(m, "result")) {
        finish(m.result);
      } else if (m.id === callId && m.error) {
        finish([denied(items), []]);
      }
    }
    function onKey(event) { if (event.key === "Escape") finish([denied(items), []]); }
    window.addEventListener("message", onMessage);
    document.addEventListener("keydown", onKey);
    frame.addEventListener("load", function () { post({method: SCOPE + "::__ready", params: "ping"}); });
    document.body.appendChild(overlay);
  }
  function issueNoModal(assertions) {
    var form = document.createElement("form");
    form.method = "POST";
    form.action = root + "issuer/frameless?" + Date.now();
    list(assertions).forEach(function (a) {
      var input = document.createElement("input");
      input.type = "hidden"; input.name = "assertions"; input.value = a;
      form.appendChild(input);
    });
    form.style.display = "none";
    document.body.appendChild(form);
    form.submit();
  }
  window.OpenBadges = {issue: issue, issue_no_modal: issueNoModal};
})();
"""

FRAME_SCRIPT = r"""
(function () {
  "use strict";
  var SCOPE = "OpenBadges.issue", parentOrigin = null, callId = null, items = [], done = false;
  function el(id) { return document.getElementById(id); }
  function send(message, target) {
    window.parent.postMessage(JSON.stringify(message), target || parentOrigin || "*");
  }
  function reply(result) {
    if (done || callId === null) return;
    done = true;
    send({id: callId, result: result});
  }
  function denyAll() { reply([items.map(function (a) { return {assertion: a, reason: "DENIED"}; }), []]); }
  function say(text) { el("status").textContent = text; }
  function show(request) {
    var ul = el("badges"), addable = 0;
    request.badges.forEach(function (badge) {
      var li = document.createElement("li"), name = document.createElement("strong"),
          facts = document.createElement("div"), verdict = document.createElement("div");
      li.className = "badge";
      name.textContent = badge.name || "A badge";
      facts.textContent = badge.issuer ? "Issued by " + badge.issuer : "";
      verdict.className = badge.ok ? "ok" : "bad";
      verdict.textContent = badge.verdict;
      li.appendChild(name); li.appendChild(facts); li.appendChild(verdict);
      ul.appendChild(li);
      if (badge.ok) addable += 1;
    });
    if (addable) {
      say(addable === 1 ? "This badge can go into your Badgr backpack." :
          addable + " of these badges can go into your Badgr backpack.");
      el("add").hidden = false;
    } else {
      say("None of these badges can be added.");
    }
    el("add").addEventListener("click", function () {
      var url = "/issuer/consent/" + encodeURIComponent(request.request);
      var popup = window.open(url, "openbadges_consent", "popup,width=640,height=720");
      if (!popup) { el("open").href = url; el("open").hidden = false; }
      say("Confirm in the window that opened.");
      poll(request);
    });
  }
  function poll(request) {
    var url = "/issuer/requests/" + encodeURIComponent(request.request) +
      "?key=" + encodeURIComponent(request.key);
    fetch(url, {credentials: "omit"}).then(function (r) { return r.json(); }).then(function (answer) {
      if (answer.done) reply([answer.errors, answer.successes]);
      else if (!done) setTimeout(function () { poll(request); }, 1000);
    }, function () { if (!done) setTimeout(function () { poll(request); }, 2000); });
  }
  function start(params) {
    items = (typeof params === "string" ? [params] : (params || []))
      .filter(function (a) { return typeof a === "string"; });
    say("Checking " + (items.length === 1 ? "the badge" : items.length + " badges") + "...");
    fetch("/issuer/verify", {method: "POST", credentials: "omit",
                             headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({assertions: items, origin: parentOrigin})})
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(show, function () {
        say("The badges could not be checked. Close this window and try again later.");
      });
  }
  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return;
    var m;
    try { m = JSON.parse(event.data); } catch (e) { return; }
    if (!m || typeof m.method !== "string") return;
    if (m.method === SCOPE + "::__ready") {
      if (m.params === "ping") send({method: SCOPE + "::__ready", params: "pong"}, event.origin);
    } else if (m.method === SCOPE + "::issue" && callId === null) {
      parentOrigin = event.origin;
      callId = m.id;
      start(m.params);
    }
  });
  el("cancel").addEventListener("click", denyAll);
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") denyAll(); });
  send({method: SCOPE + "::__ready", params: "ping"}, "*");
})();
"""

FRAME_BODY = (
    "<h1>Add badges to your backpack</h1>"
    "<p id='status' role='status'>Waiting for the issuer's page...</p>"
    "<ul id='badges' class='badges'></ul>"
    "<button id='add' type='button' hidden>Add to my Badgr backpack</button>"
    "<button id='cancel' type='button' class='secondary'>Cancel</button>"
    "<p><a id='open' target='_blank' rel='opener' hidden>Open the confirmation page</a></p>"
)

FRAME_HTML = page_layout("Add badges to your backpack", FRAME_BODY, FRAME_SCRIPT)
FRAME_CSP = (
    f"default-src 'none'; script-src {script_hash(FRAME_SCRIPT)}; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'; frame-ancestors http: https:; form-action 'none'"
)

# A confirmation page opened by the frame closes itself once the learner has answered.
CLOSE_SCRIPT = "if (window.opener) { setTimeout(function () { window.close(); }, 1500); }"
CLOSE_CSP = (
    f"default-src 'none'; script-src {script_hash(CLOSE_SCRIPT)}; style-src 'unsafe-inline'; "
    "img-src 'self'; form-action 'self'"
)
