"""export-db's rules, without a database: shared addresses, bodies, images, URLs, the schema file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_migrate import fullexport
from backpack_migrate.backpack_db import DatabaseError, DatabaseTarget
from backpack_migrate.backpack_rows import (
    decode_image,
    group_badge_ids,
    parse_body,
    parse_stories,
    settle_shared_addresses,
    user_record,
)
from backpack_migrate.cli import main
from backpack_migrate.domain import Problem
from infra.local.bakery import make_png, make_svg

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "full-fidelity-export.schema.json"


@pytest.mark.parametrize(
    ("holders", "keeper"),
    [
        # primary and verified wins over everything, whatever the ids
        ([("a@x.org", 9, "email", True), ("A@X.org", 1, "additional_email_1", True)], 9),
        # then a verified address over an unverified primary
        ([("a@x.org", 1, "email", False), ("a@x.org ", 2, "additional_email_2", True)], 2),
        # then the primary over an unverified additional one
        ([("a@x.org", 5, "additional_email_1", False), ("A@x.org", 7, "email", False)], 7),
        # then the lowest user id
        ([("a@x.org", 8, "additional_email_1", True), ("a@X.ORG", 3, "additional_email_2", True)], 3),
    ],
)
def test_one_user_keeps_a_shared_address(holders: list[tuple[str, int, str, bool]], keeper: int) -> None:
    decisions, conflicts = settle_shared_addresses(holders)
    assert [c.kept_by.user_id for c in conflicts] == [keeper]
    losers = {(u, f) for _, u, f, _ in holders if u != keeper}
    assert set(decisions) == losers
    assert all(d.kept_by == keeper for d in decisions.values())


def test_addresses_alike_only_under_the_database_collation_are_not_shared() -> None:
    decisions, conflicts = settle_shared_addresses(
        [("jose@x.org", 1, "email", True), ("josé@x.org", 2, "email", True)]
    )
    assert decisions == {} and conflicts == []


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 4,
        "first_name": "Ada",
        "last_name": None,
        "email": "ada@x.org",
        "email_is_verified": 1,
        "additional_email_1": None,
        "additional_email_1_is_verified": 0,
        "additional_email_2": None,
        "additional_email_2_is_verified": 0,
        "created_at": None,
        "updated_at": 5,
    }
    return row | fields


def test_a_user_keeps_each_address_once_primary_first() -> None:
    user = user_record(
        _row(additional_email_1="  ", additional_email_2="ADA@x.org", additional_email_2_is_verified=1), {}
    )
    assert [(e.address, e.verified, e.primary) for e in user.emails] == [("ada@x.org", True, True)]
    assert [p.code for p in user.problems] == ["EMAIL_REPEATED"]
    unverified_twice = user_record(
        _row(email_is_verified=0, additional_email_1="Ada@X.org", additional_email_1_is_verified=1), {}
    )
    assert unverified_twice.emails[0].verified  # the Backpack trusted it through the verified copy


def test_a_user_whose_only_address_went_to_another_is_said_to_have_none() -> None:
    decisions, _ = settle_shared_addresses(
        [("ada@x.org", 4, "email", False), ("ada@x.org", 1, "email", True)]
    )
    user = user_record(_row(email_is_verified=0), decisions)
    assert user.emails == []
    assert [p.code for p in user.problems] == ["EMAIL_KEPT_BY_OTHER_USER", "USER_WITHOUT_ADDRESS"]
    assert "ada@x.org" not in json.dumps([p.message for p in user.problems])


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "BODY_NOT_JSON"),
        (b'"a string"', "BODY_NOT_JSON"),
        (b"\xff\xfe", "BODY_NOT_JSON"),
        (b"", "BODY_NOT_JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object(raw: bytes, code: str) -> None:
    body, problem = parse_body(raw)
    assert body is None and problem is not None and problem.code == code


def test_images_decoded_from_their_base64_text() -> None:
    png, svg = make_png("#123456", 8), make_svg("#123456", "B").encode()
    assert decode_image(base64.b64encode(png)) == (png, "image/png")
    wrapped = b"data:image/png;base64," + b"\n".join(
        base64.b64encode(png)[i : i + 20] for i in range(0, 200, 20)
    )
    assert decode_image(wrapped) == (png, "image/png")
    assert decode_image(base64.b64encode(svg)) == (svg, "image/svg+xml")
    for raw, code in [
        (None, "IMAGE_MISSING"),
        (b"   ", "IMAGE_MISSING"),
        (b"%%%", "IMAGE_UNDECODABLE"),
        (b"abc", "IMAGE_UNDECODABLE"),
        (base64.b64encode(b"GIF89a..."), "IMAGE_NOT_AN_IMAGE"),
    ]:
        outcome = decode_image(raw)
        assert isinstance(outcome, Problem) and outcome.code == code, raw


def test_database_urls() -> None:
    target = DatabaseTarget.from_url("mysql://bp:p%40ss%3Aw@db.example:3307/backpack")
    assert (target.user, target.password, target.host, target.port, target.database) == (
        "bp",
        "p@ss:w",
        "db.example",
        3307,
        "backpack",
    )
    assert "p@ss" not in target.describe()
    local = DatabaseTarget.from_url("mysql://root@localhost/backpack?unix_socket=/tmp/x/my.sock")
    assert local.unix_socket == "/tmp/x/my.sock" and local.password == ""
    for bad in ("http://x/db", "mysql://x", "mysql://x:notaport/db", "mysql://x/db?ssl=1"):
        with pytest.raises(DatabaseError):
            DatabaseTarget.from_url(bad)


def test_the_published_schema_is_the_models_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert main(["export-schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == fullexport.json_schema()
    assert SCHEMA_FILE.read_text() == out.read_text(), (
        "docs/full-fidelity-export.schema.json is out of date: "
        "run .venv/bin/backpack-migrate export-schema --out docs/full-fidelity-export.schema.json"
    )


@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_hostile_blobs_become_problems_never_errors(raw: bytes) -> None:
    body, problem = parse_body(raw)
    assert (body is None) == (problem is not None)
    image = decode_image(raw)
    assert isinstance(image, Problem) or image[1] in ("image/png", "image/svg+xml")
    ids, problems = group_badge_ids(raw)
    assert all(isinstance(i, int) for i in ids) and all(isinstance(p, Problem) for p in problems)
    stories, story_problem = parse_stories(raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in stories.items())
    assert story_problem is None or not stories


def test_json_nested_too_deep_is_a_problem_too() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert parse_body(deep)[1] is not None
    assert group_badge_ids(deep)[1][0].code == "GROUP_BADGES_NOT_JSON"
    assert parse_stories(b'{"a":' * 100_000)[1] is not None
