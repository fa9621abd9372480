"""`backpack-migrate verify` through run_verify, offline with --serve."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from ob_helpers import itxt, tiny_png

from backpack_migrate.openbadges.cli import run_verify

pytestmark = pytest.mark.unit

URL = "https://issuer.example/a/1"


def _write_world(tmp_path: Path, expires: str | None = None) -> Path:
    assertion = {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "Assertion",
        "id": URL,
        "recipient": {"type": "email", "hashed": False, "identity": "kid@example.org"},
        "badge": "https://issuer.example/b",
        "issuedOn": "2020-01-01",
        "verification": {"type": "hosted"},
    }
    if expires:
        assertion["expires"] = expires
    badge = {
        "id": "https://issuer.example/b",
        "name": "Kites",
        "description": "d",
        "image": "https://issuer.example/b.png",
        "criteria": "https://issuer.example/c",
        "issuer": "https://issuer.example/i",
    }
    issuer = {
        "id": "https://issuer.example/i",
        "name": "Kite School",
        "url": "https://issuer.example",
        "email": "a@b.c",
    }
    for name, doc in {"assertion": assertion, "badge": badge, "issuer": issuer}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    serve = {
        URL: "assertion.json",
        "https://issuer.example/b": "badge.json",
        "https://issuer.example/i": "issuer.json",
    }
    (tmp_path / "serve.json").write_text(json.dumps(serve))
    return tmp_path / "serve.json"


def _run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_verify(args, out=out, err=io.StringIO())
    return code, out.getvalue()


def test_valid_url_json_output(tmp_path: Path) -> None:
    serve = _write_world(tmp_path)
    code, out = _run(["verify", URL, "--serve", str(serve), "--json", "--recipient", "KID@example.org"])
    assert code == 0
    data = json.loads(out)
    assert data["valid"] is True and data["version"] == "2.0" and data["errors"] == []
    assert data["badge"]["badge_class"]["name"] == "Kites"


def test_baked_file_human_output(tmp_path: Path) -> None:
    serve = _write_world(tmp_path)
    png = tmp_path / "badge.png"
    png.write_bytes(tiny_png(itxt(URL)))
    code, out = _run([str(png), "--serve", str(serve)])
    assert code == 0
    assert out.startswith("VALID: Kites (Open Badges 2.0)") and "Kite School" in out


def test_invalid_exit_1(tmp_path: Path) -> None:
    serve = _write_world(tmp_path, expires="2021-01-01")
    code, out = _run([URL, "--serve", str(serve), "--json"])
    assert code == 1
    assert [e["code"] for e in json.loads(out)["errors"]] == ["EXPIRED"]
    code, _ = _run([URL, "--serve", str(serve), "--recipient", "someone@else.org"])
    assert code == 1


def test_unknown_url_is_unreachable_with_serve(tmp_path: Path) -> None:
    serve = _write_world(tmp_path)
    code, out = _run(["https://not-in-map.example/x", "--serve", str(serve), "--json"])
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "ASSERTION_NOT_FOUND"


def test_unusable_inputs_exit_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    plain.write_bytes(tiny_png())
    assert _run([str(plain), "--json"])[0] == 2
    text = tmp_path / "notes.txt"
    text.write_text("just some notes")
    assert _run([str(text)])[0] == 2
    assert _run([str(tmp_path / "missing.png")])[0] == 2
    assert _run([])[0] == 2


def test_json_file_input(tmp_path: Path) -> None:
    serve = _write_world(tmp_path)
    code, _ = _run([str(tmp_path / "assertion.json"), "--serve", str(serve)])
    assert code == 0
