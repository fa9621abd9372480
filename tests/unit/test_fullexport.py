"""The full-fidelity export's models: round trip, reading line by line, telling formats apart."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from backpack_migrate import fullexport
from backpack_migrate.domain import Problem
from backpack_migrate.fullexport import (
    ExportedBadge,
    ExportedEmail,
    ExportedGrant,
    ExportedGroup,
    ExportedPortfolio,
    ExportedUser,
    ExportFormat,
    FullExportError,
)

pytestmark = pytest.mark.unit

USER = ExportedUser(
    id=7,
    first_name="Ada",
    emails=[
        ExportedEmail(address="Ada@Example.org", verified=True, primary=True),
        ExportedEmail(address="ada@work.example", verified=False, primary=False),
    ],
    created_at=1_400_000_000_000,
)
BADGE = ExportedBadge(
    id=3,
    user_id=7,
    body={"recipient": "ada@example.org", "badge": {"name": "B"}},
    body_hash="ab12",
    image="images/ab12.png",
    media_type="image/png",
    problems=[Problem(code="X", message="y")],
)
GROUP = ExportedGroup(
    id=1,
    user_id=7,
    name="Mine",
    public=True,
    badges=[3, 99],
    portfolio=ExportedPortfolio(id=4, title="T", stories={"3": "story"}),
)
GRANT = ExportedGrant(
    id=2,
    user_id=7,
    origin="https://site.example",
    permissions=["issue"],
    access_time=1,
    access_token_sha256="0" * 64,
    refresh_token_sha256="1" * 64,
)


def _zip(members: dict[str, bytes]) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return zipfile.ZipFile(buffer)


def test_every_record_round_trips_through_a_jsonl_member() -> None:
    archive = _zip(
        {
            fullexport.USERS_MEMBER: fullexport.to_line(USER),
            fullexport.BADGES_MEMBER: fullexport.to_line(BADGE) * 2,
            fullexport.GROUPS_MEMBER: fullexport.to_line(GROUP),
            fullexport.GRANTS_MEMBER: fullexport.to_line(GRANT),
        }
    )
    assert list(fullexport.iter_member(archive, fullexport.USERS_MEMBER)) == [USER]
    assert list(fullexport.iter_member(archive, fullexport.BADGES_MEMBER)) == [BADGE, BADGE]
    assert list(fullexport.iter_member(archive, fullexport.GROUPS_MEMBER)) == [GROUP]
    assert list(fullexport.iter_member(archive, fullexport.GRANTS_MEMBER, ExportedGrant)) == [GRANT]
    assert list(fullexport.iter_member(archive, "absent.jsonl", ExportedGrant)) == []


def test_a_bad_line_raises_or_is_reported_and_skipped() -> None:
    lines = [
        fullexport.to_line(USER),
        b'{"id": "not a number"}\n',
        b"not json\n",
        b"\n",
        fullexport.to_line(USER),
    ]
    with pytest.raises(FullExportError) as raised:
        list(fullexport.iter_jsonl(lines, ExportedUser, member="users.jsonl"))
    assert raised.value.problem.code == "RECORD_INVALID"
    assert "Line 2 of users.jsonl" in raised.value.problem.message
    seen: list[tuple[int, str]] = []
    read = list(fullexport.iter_jsonl(lines, ExportedUser, on_error=lambda n, p: seen.append((n, p.code))))
    assert read == [USER, USER]
    assert seen == [(2, "RECORD_INVALID"), (3, "RECORD_INVALID")]


def test_format_json_tells_the_formats_apart() -> None:
    mine = ExportFormat(created_at="2026-01-01T00:00:00Z", counts={"users": 1}).model_dump_json().encode()
    assert fullexport.parse_format(mine) == ExportFormat(
        created_at="2026-01-01T00:00:00Z", counts={"users": 1}
    )
    assert fullexport.parse_format(b'{"format": "something-else"}') is None
    assert fullexport.parse_format(b"not json") is None
    with pytest.raises(FullExportError) as raised:
        fullexport.parse_format(
            json.dumps({"format": fullexport.FORMAT_NAME, "version": 9, "created_at": "x"}).encode()
        )
    assert raised.value.problem.code == "FORMAT_VERSION_UNKNOWN"


def test_image_members_never_leave_the_images_folder() -> None:
    assert fullexport.image_member("ab" * 32, 5, "image/svg+xml") == f"images/{'ab' * 32}.svg"
    assert fullexport.image_member("../../etc/passwd", 5, "image/png") == "images/badge-5.png"


def test_the_json_schema_names_every_member() -> None:
    schema = fullexport.json_schema()
    assert set(schema["properties"]) == {
        "format.json",
        "users.jsonl",
        "badges.jsonl",
        "groups.jsonl",
        "grants.jsonl",
        "export-report.json",
    }
    assert {"ExportedUser", "ExportedBadge", "Problem", "ExportedPortfolio"} <= set(schema["$defs"])
    assert "password" not in json.dumps(schema)
