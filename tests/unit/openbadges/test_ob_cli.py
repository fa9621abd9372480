"""`backpack-migrate verify` through run_verify, offline with --serve."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from ob_helpers import itxt, public_pem, sign_jws, svg_with, tiny_png

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
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "ASSERTION_UNREACHABLE"


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


def test_json_that_speaks_of_no_badge_is_unusable(tmp_path: Path) -> None:
    for text in ("{}", '{"foo": 1}', "[1, 2]"):
        doc = tmp_path / "doc.json"
        doc.write_text(text)
        code, out = _run([str(doc), "--json"])
        assert code == 2 and [e["code"] for e in json.loads(out)["errors"]] == ["NOT_A_BADGE"], text


def test_unusable_input_still_answers_in_json(tmp_path: Path) -> None:
    for args, expected in (
        ([str(tmp_path / "missing.png")], "INPUT_UNREADABLE"),
        ([URL, "--serve", str(tmp_path / "no-map.json")], "SERVE_MAP_UNREADABLE"),
    ):
        code, out = _run([*args, "--json"])
        data = json.loads(out)
        assert code == 2 and data["valid"] is False and data["badge"] is None
        assert [e["code"] for e in data["errors"]] == [expected]


def test_serve_map_statuses_and_paths_relative_to_the_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = _write_world(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # relative paths are read from the map's folder, not here
    assert _run([URL, "--serve", str(serve)])[0] == 0
    world = json.loads(serve.read_text())
    for entry, code in (
        ({"file": "assertion.json", "status": 410}, "REVOKED"),
        ({"status": 404}, "ASSERTION_NOT_FOUND"),
    ):
        serve.write_text(json.dumps({**world, URL: entry}))
        exit_code, out = _run([URL, "--serve", str(serve), "--json"])
        assert exit_code == 1 and code in [e["code"] for e in json.loads(out)["errors"]], entry


def test_baked_svg_and_signed_jws_files(tmp_path: Path) -> None:
    serve = _write_world(tmp_path)
    svg = tmp_path / "badge.svg"
    svg.write_bytes(svg_with(verify=URL))
    assert _run([str(svg), "--serve", str(serve), "--recipient", "kid@example.org"])[0] == 0

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_url = "https://issuer.example/key"
    world = json.loads(serve.read_text())
    issuer = json.loads((tmp_path / "issuer.json").read_text())
    (tmp_path / "issuer.json").write_text(json.dumps({**issuer, "publicKey": key_url}))
    (tmp_path / "key.json").write_text(json.dumps({"id": key_url, "publicKeyPem": public_pem(key)}))
    serve.write_text(json.dumps({**world, key_url: "key.json"}))
    assertion = json.loads((tmp_path / "assertion.json").read_text())
    verification = {"type": "SignedBadge", "creator": key_url}
    signed = {**assertion, "id": "urn:uuid:7d9e0c1a", "verification": verification}
    jws = tmp_path / "badge.jws"
    jws.write_text(sign_jws(signed, key))
    code, out = _run([str(jws), "--serve", str(serve), "--json"])
    assert code == 0, out
    assert json.loads(out)["payload_kind"] == "jws"
