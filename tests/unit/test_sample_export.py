"""The demo export, its issuer site and the baking helpers behind them."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from defusedxml.ElementTree import fromstring as parse_xml

from backpack_migrate.domain import BadgeState
from backpack_migrate.export import (
    FileRangeReader,
    iter_learners,
    plan_export,
    read_badge_image,
    read_member,
)
from infra.local.bakery import (
    PNG_SIGNATURE,
    bake_png,
    bake_svg,
    iter_chunks,
    make_png,
    make_svg,
    new_rsa_key,
    public_pem,
    sign_jws,
    tamper_jws,
    unbake_png,
)
from infra.local.issuer_site import IssuerSite
from infra.local.sample_export import DemoWorld, build_demo, hash_recipient, load_world, write_large_export

pytestmark = pytest.mark.unit

OB_NS = "{http://openbadges.org}assertion"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoWorld, IssuerSite]]:
    out = tmp_path_factory.mktemp("demo")
    with IssuerSite(out / "site") as site:
        yield build_demo(out, site.url), site


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _payload(data: bytes) -> str:
    if data.startswith(PNG_SIGNATURE):
        text = unbake_png(data)
        assert text is not None
        return text
    root = parse_xml(data)
    element = root.find(OB_NS)
    assert element is not None
    return element.attrib["verify"]


def _rs256_valid(pem: str, signing_input: str, signature: str) -> bool:
    key = load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    try:
        key.verify(raw, signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------------ the demo


def test_every_listed_file_has_exactly_one_expected_state(demo: tuple[DemoWorld, IssuerSite]) -> None:
    world, _ = demo
    with FileRangeReader(world.zip_path) as reader:
        listed = [(learner.email, f.name) for learner in iter_learners(reader) for f in learner.files]
    expected = [(b.email, b.file) for b in world.expected]
    assert sorted(listed) == sorted(expected)
    assert len(set(expected)) == len(expected)
    assert len(listed) == 100
    counts = world.counts()
    assert sum(counts.values()) == 100
    assert counts == {
        "imported": 83,
        "already_in_badgr": 1,  # pre-imported by the demo
        "pending": 5,  # Pat's address is unconfirmed in Badgr
        # 404 issuer, revoked (flag), revoked (410), expired, tampered, revoked (list), wrong recipient
        "rejected": 7,
        "unreadable": 4,  # nothing baked, missing, not an image, empty
    }
    assert {b.kind for b in world.expected} >= {"hosted-2.0", "hosted-1.0", "hosted-0.5", "signed-2.0"}
    assert {b.media for b in world.expected} >= {"png", "svg"}


def test_demo_reads_back_with_the_planned_problems(demo: tuple[DemoWorld, IssuerSite]) -> None:
    world, _ = demo
    by_file = {b.file: b for b in world.expected}
    with FileRangeReader(world.zip_path) as reader:
        plan = plan_export(reader)
        assert len(plan.learners) == 19  # Linus is listed twice, merged
        linus = next(learner for learner in plan.learners if learner.normalized_email == "linus@example.org")
        assert [p.code for p in linus.problems] == ["DUPLICATE_EMAIL"]
        assert len(linus.files) == 10
        problems = {f.name: f.problem.code for learner in plan.learners for f in learner.files if f.problem}
        assert sorted(problems.values()) == ["EMPTY_FILE", "FILE_MISSING", "NOT_AN_IMAGE"]
        for learner in plan.learners:
            for f in learner.files:
                expectation = by_file[f.name]
                if f.problem:
                    assert expectation.state == BadgeState.UNREADABLE
                    continue
                assert f.location is not None
                data = read_member(reader, f.location)
                if expectation.kind == "none":  # the PNG with nothing baked
                    assert unbake_png(data) is None
                    assert expectation.state == BadgeState.UNREADABLE
                    continue
                _, media_type = read_badge_image(reader, f.location)
                assert media_type == ("image/png" if expectation.media == "png" else "image/svg+xml")
                payload = _payload(data)
                assert expectation.assertion_id is not None
                if expectation.kind == "signed-2.0":
                    assert payload.count(".") == 2
                elif expectation.kind == "hosted-1.0":
                    assert json.loads(payload)["verify"]["url"] == expectation.assertion_id
                else:
                    assert payload == expectation.assertion_id


def test_hosted_documents_are_served_with_the_planned_statuses(demo: tuple[DemoWorld, IssuerSite]) -> None:
    world, _ = demo
    by_reason = {b.file.split("-", 1)[1].rsplit(".", 1)[0]: b for b in world.expected}
    gone = by_reason["issuer-gone"]
    assert gone.assertion_id is not None
    assert _get(gone.assertion_id)[0] == 404
    revoked_410 = by_reason["revoked-410"]
    assert revoked_410.assertion_id is not None
    assert _get(revoked_410.assertion_id)[0] == 410
    revoked = by_reason["revoked-hosted"]
    assert revoked.assertion_id is not None
    status, content_type, body = _get(revoked.assertion_id)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["revoked"] is True
    expired = by_reason["expired"]
    assert expired.assertion_id is not None
    assert json.loads(_get(expired.assertion_id)[2])["expires"].startswith("2019-01-31")
    for badge in world.expected:
        if badge.state != BadgeState.IMPORTED or not badge.kind.startswith("hosted"):
            continue
        assert badge.assertion_id is not None and badge.recipient is not None
        status, _, body = _get(badge.assertion_id)
        assert status == 200, badge
        doc = json.loads(body)
        recipient = doc["recipient"]
        if badge.kind == "hosted-0.5":
            assert recipient in (badge.recipient, hash_recipient(badge.recipient, doc.get("salt", "")))
            continue
        if recipient["hashed"]:
            assert recipient["identity"] == hash_recipient(badge.recipient, recipient["salt"])
        else:
            assert recipient["identity"] == badge.recipient
        badge_url = doc["badge"]
        badge_class = json.loads(_get(badge_url)[2])
        assert _get(badge_class["image"])[1] == "image/png"
        assert _get(badge_class["issuer"])[0] == 200


def test_signed_badges_verify_except_the_tampered_one(demo: tuple[DemoWorld, IssuerSite]) -> None:
    world, _ = demo
    with FileRangeReader(world.zip_path) as reader:
        index = {f.name: f.location for learner in iter_learners(reader) for f in learner.files}
        signed = [b for b in world.expected if b.kind == "signed-2.0"]
        assert len(signed) >= 10
        for badge in signed:
            loc = index[badge.file]
            assert loc is not None
            jws = _payload(read_member(reader, loc))
            header, body, signature = jws.split(".")
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            assert payload["id"] == badge.assertion_id
            key_doc = json.loads(_get(payload["verification"]["creator"])[2])
            valid = _rs256_valid(key_doc["publicKeyPem"], f"{header}.{body}", signature)
            assert valid == ("tampered" not in badge.file), badge.file
    revocations = json.loads((world.site_dir / "signer" / "revocations.json").read_text())
    revoked_ids = [r["id"] for r in revocations["revokedAssertions"]]
    assert revoked_ids == [b.assertion_id for b in world.expected if "revoked-signed" in b.file]


def test_accounts_holdings_and_preimports(demo: tuple[DemoWorld, IssuerSite]) -> None:
    world, _ = demo
    usernames = {a.username for a in world.accounts}
    assert {learner.account for learner in world.learners} == usernames
    assert len(world.learners) == 20
    pat = next(a for a in world.accounts if a.first_name == "Pat")
    assert [(e.email, e.verified) for e in pat.emails] == [
        ("pat.primary@example.net", True),
        ("pat@example.org", False),
    ]
    assert all(b.state == BadgeState.PENDING for b in world.expected if b.email == "pat@example.org")
    assert list(world.preimport) == ["ada@example.org"]
    already = [b for b in world.expected if b.state == BadgeState.ALREADY_IN_BADGR]
    assert world.preimport["ada@example.org"] == [already[0].assertion_id]
    held = sum(len(v) for v in world.holdings.values())
    assert held == 83 + 1 + 5
    assert world.held_ids("pat.primary@example.net") == set()
    assert len(world.held_ids("pat.primary@example.net", include_pending=True)) == 5
    assert len(world.held_ids("linus@example.org")) == 10
    mismatch = next(b for b in world.expected if "recipient-mismatch" in b.file)
    assert mismatch.recipient == "someone.else@example.org"
    assert mismatch.assertion_id not in world.held_ids("mallory@example.org")
    assert load_world(world.expectations_path) == world


def test_demo_is_deterministic_apart_from_keys(tmp_path: Path) -> None:
    one = build_demo(tmp_path / "one", "http://127.0.0.1:1")
    two = build_demo(tmp_path / "two", "http://127.0.0.1:1")
    strip = {"zip_path", "site_dir", "expectations_path", "expected", "holdings", "preimport"}
    assert one.model_dump(exclude=strip) == two.model_dump(exclude=strip)
    assert [(b.file, b.state) for b in one.expected] == [(b.file, b.state) for b in two.expected]


def test_verifier_unbake_reads_the_demo_badges(demo: tuple[DemoWorld, IssuerSite]) -> None:
    """Cross-check with the verifier's unbake when it is available (it is not a dependency)."""
    openbadges = pytest.importorskip("backpack_migrate.openbadges")
    unbake = getattr(openbadges, "unbake", None)
    if unbake is None:
        pytest.skip("backpack_migrate.openbadges.unbake is not there yet")
    world, _ = demo
    with FileRangeReader(world.zip_path) as reader:
        for learner in iter_learners(reader):
            for f in learner.files:
                badge = world.expected_for(learner.email, f.name)
                if f.location is None or f.problem or badge.kind == "none":
                    continue
                text = unbake(read_member(reader, f.location))
                assert isinstance(text, str)
                assert badge.assertion_id is not None
                if badge.kind == "signed-2.0":
                    assert text.count(".") == 2 or badge.assertion_id in text
                else:
                    assert badge.assertion_id in text


# ------------------------------------------------------------------------------ large exports


def test_large_export_streams_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "large.zip"
    write_large_export(path, learners=300, badges=1500, issuer_base_url="http://127.0.0.1:9", issuers=20)
    with FileRangeReader(path) as reader:
        learners = list(iter_learners(reader))
        assert len(learners) == 300
        assert sum(len(learner.files) for learner in learners) == 1500
        assert all(f.problem is None for learner in learners for f in learner.files)
        first = learners[0].files[0]
        assert first.location is not None
        data, media_type = read_badge_image(reader, first.location)
        assert media_type == "image/png"
        assert unbake_png(data) == "http://127.0.0.1:9/i0/assertions/0.json"
        svg = learners[4].files[0]
        assert svg.location is not None
        data, media_type = read_badge_image(reader, svg.location)
        assert media_type == "image/svg+xml"
        assert _payload(data) == "http://127.0.0.1:9/i4/assertions/4.json"


# ------------------------------------------------------------------------------ baking


def test_bake_png_writes_the_reference_itxt_layout() -> None:
    png = make_png("#123456", 8)
    baked = bake_png(png, "https://example.org/a.json")
    chunks = iter_chunks(baked)
    assert [kind for kind, _ in chunks[:2]] == [b"IHDR", b"iTXt"]
    assert chunks[1][1] == b"openbadges\0\0\0\0\0https://example.org/a.json"
    # the CRC covers type and data
    length = struct.unpack(">I", baked[33:37])[0]
    crc = struct.unpack(">I", baked[41 + length : 45 + length])[0]
    assert crc == zlib.crc32(baked[37 : 41 + length])
    rebaked = bake_png(baked, '{"é": 1}')
    assert [kind for kind, _ in iter_chunks(rebaked)].count(b"iTXt") == 1
    assert unbake_png(rebaked) == '{"é": 1}'
    assert unbake_png(bake_png(png, "x" * 100, compressed=True)) == "x" * 100
    assert iter_chunks(bake_png(png, "y", compressed=True))[1][1][11:13] == b"\x01\x00"
    text = bake_png(png, "https://example.org/b.json", chunk="tEXt")
    assert iter_chunks(text)[1] == (b"tEXt", b"openbadges\0https://example.org/b.json")
    assert unbake_png(png) is None


def test_make_png_is_a_valid_image() -> None:
    png = make_png((255, 0, 0), 10)
    chunks = dict(iter_chunks(png))
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (10, 10)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == 10 * (1 + 10 * 4)
    assert raw[1 + 5 * 4 + 10 * 41 * 0 : 1 + 5 * 4 + 4] == b"\xff\x00\x00\xff"  # top row centre is red


def test_bake_svg_follows_the_reference_element() -> None:
    svg = make_svg("#abcdef", "A & B")
    baked = bake_svg(svg, '{"id": "https://example.org/a.json", "x": "]]>"}', "https://example.org/a.json")
    root = parse_xml(baked.encode())
    element = root.find(OB_NS)
    assert element is not None
    assert element.attrib["verify"] == "https://example.org/a.json"
    assert json.loads(element.text or "") == {"id": "https://example.org/a.json", "x": "]]>"}
    assert root[0] is element  # first child of the root
    rebaked = bake_svg(baked, None, 'a.b.c"<')
    root = parse_xml(rebaked.encode())
    assert len(root.findall(OB_NS)) == 1
    assert root.find(OB_NS).attrib["verify"] == 'a.b.c"<'
    assert root.find(OB_NS).text == 'a.b.c"<'  # no JSON given: the CDATA repeats the attribute
    assert rebaked.count("xmlns:openbadges") == 1


def test_sign_and_tamper_jws() -> None:
    key = new_rsa_key()
    token = sign_jws({"id": "urn:uuid:1"}, key, alg_header="rs256")
    header, body, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "rs256"}
    assert _rs256_valid(public_pem(key), f"{header}.{body}", signature)
    forged = tamper_jws(token, {"id": "urn:uuid:2"})
    assert forged.split(".")[2] == signature
    assert forged.split(".")[1] != body


# ------------------------------------------------------------------------------ issuer site


def test_issuer_site_serves_files_and_statuses(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "doc.json").write_text('{"ok": true}')
    (tmp_path / "a" / "pic.svg").write_text("<svg/>")
    (tmp_path / "a" / "gone.json").write_text("{}")
    (tmp_path / "statuses.json").write_text(json.dumps({"/a/gone.json": 410, "/b/": 404}))
    (tmp_path / "secret.txt").write_text("no")
    with IssuerSite(tmp_path / "a" / "..", latency=0.01) as site:
        assert _get(f"{site.url}/a/doc.json") == (200, "application/json", b'{"ok": true}')
        assert _get(f"{site.url}/a/pic.svg")[:2] == (200, "image/svg+xml")
        assert _get(f"{site.url}/a/gone.json")[0] == 410
        assert _get(f"{site.url}/b/anything.json")[0] == 404
        assert _get(f"{site.url}/a/missing.json")[0] == 404
        assert _get(f"{site.url}/statuses.json")[0] == 404
        assert _get(f"{site.url}/a/%2e%2e/%2e%2e/etc/passwd")[0] == 404
        assert site.hits["/a/doc.json"] == 1
    with pytest.raises(RuntimeError):
        _ = site.url
