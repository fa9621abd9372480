"""The full-fidelity export: the Backpack's own database, as one ZIP of JSON Lines and images.

These models are the one definition of the format. ``export-db`` writes them, intake reads
them, and the published JSON Schema is generated from them (:func:`json_schema`).

Members (UTF-8):

- ``format.json``: :class:`ExportFormat`, names the format and its version.
- ``users.jsonl``, ``badges.jsonl``, ``groups.jsonl``, ``grants.jsonl``: one object a line.
- ``images/<body_hash>.png|svg``: each badge's baked image, as the Backpack held it.
- ``export-report.json``: :class:`ExportReport`, what was left out or repaired, and why.

No secret ever reaches the format: no password, salt, verification, reset or delete code,
no Facebook token, and Backpack Connect tokens only as SHA-256 digests.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .domain import Problem
from .models import Model

FORMAT_NAME = "backpack-full-fidelity"
FORMAT_VERSION = 1

FORMAT_MEMBER = "format.json"
USERS_MEMBER = "users.jsonl"
BADGES_MEMBER = "badges.jsonl"
GROUPS_MEMBER = "groups.jsonl"
GRANTS_MEMBER = "grants.jsonl"
REPORT_MEMBER = "export-report.json"
IMAGES_PREFIX = "images/"

MediaType = Literal["image/png", "image/svg+xml"]
IMAGE_EXTENSIONS: dict[str, str] = {"image/png": "png", "image/svg+xml": "svg"}

# A body hash names an image member (and a public URL); anything else gets a neutral name.
_SAFE_HASH = re.compile(r"[A-Za-z0-9_-]{1,128}")


class _Record(Model):
    # Readers of version 1 ignore fields a later writer may add.
    model_config = ConfigDict(extra="ignore")


class ExportedEmail(_Record):
    """One of a user's addresses, as stored (case kept). Unverified ones are kept, flagged."""

    address: str
    verified: bool
    primary: bool


class ExportedUser(_Record):
    """A Backpack user: primary address first, then ``additional_email_1`` and ``_2``."""

    id: int
    first_name: str | None = None
    last_name: str | None = None
    emails: list[ExportedEmail] = Field(default_factory=list)
    created_at: int | None = Field(default=None, description="milliseconds since the epoch, as stored")
    updated_at: int | None = Field(default=None, description="milliseconds since the epoch, as stored")
    problems: list[Problem] = Field(default_factory=list)


class ExportedBadge(_Record):
    """A badge a user held. Hosted when ``endpoint`` is set, signed when ``signature`` is."""

    id: int
    user_id: int
    awarded_to: str | None = Field(default=None, description="which of the user's addresses matched")
    endpoint: str | None = None
    signature: str | None = None
    body: dict[str, Any] | None = Field(
        default=None, description="the stored assertion JSON; null when it is not a JSON object"
    )
    body_hash: str
    image: str | None = Field(default=None, description="member name: images/<body_hash>.<png|svg>")
    media_type: MediaType | None = None
    validated_on: str | None = Field(default=None, description="ISO-8601, UTC")
    public_path: str | None = None
    public: bool = False
    problems: list[Problem] = Field(default_factory=list)


class ExportedPortfolio(_Record):
    """The share page of a group."""

    id: int
    url: str | None = None
    title: str | None = None
    subtitle: str | None = None
    preamble: str | None = None
    stories: dict[str, str] = Field(default_factory=dict, description='{"<badgeId>": "<text>"}')


class ExportedGroup(_Record):
    """A group (collection). ``badges`` keeps the stored order and stale ids; ids of another
    user's badges are removed and reported as a problem on the group."""

    id: int
    user_id: int
    name: str | None = None
    url: str | None = None
    public: bool = False
    badges: list[int] = Field(default_factory=list)
    portfolio: ExportedPortfolio | None = None
    problems: list[Problem] = Field(default_factory=list)


class ExportedGrant(_Record):
    """A Backpack Connect grant; its tokens only as SHA-256 hex digests of the token text."""

    id: int
    user_id: int
    origin: str
    permissions: list[str] = Field(default_factory=list)
    access_time: int = Field(
        description="as stored: seconds since the epoch when the access token was issued "
        "(it lived 3600 s from then)"
    )
    access_token_sha256: str
    refresh_token_sha256: str


class ExportFormat(_Record):
    """``format.json``: how intake tells this format from the 2019 ZIP."""

    format: Literal["backpack-full-fidelity"] = "backpack-full-fidelity"
    version: int = FORMAT_VERSION
    created_at: str = Field(description="ISO-8601, UTC")
    counts: dict[str, int] = Field(default_factory=dict, description="records in each member")


class TableCount(_Record):
    """Rows of one table: read from the database, written to the export, left out."""

    read: int = 0
    exported: int = 0
    left_out: dict[str, int] = Field(default_factory=dict, description="rows left out, by reason code")


class LeftOutRow(_Record):
    """A row refused for a reason of its own (rows of inactive users are only counted)."""

    table: str
    id: int | None = None
    problem: Problem


class EmailHolder(_Record):
    user_id: int
    field: Literal["email", "additional_email_1", "additional_email_2"]
    verified: bool


class EmailConflict(_Record):
    """One address (compared case-insensitively) held by several users: who keeps it, and who
    was reported and had it left off (the address itself is on the keeper's record)."""

    kept_by: EmailHolder
    reported: list[EmailHolder]
    rule: str


class ExportReport(_Record):
    """``export-report.json``."""

    tables: dict[str, TableCount] = Field(default_factory=dict)
    inactive_users: int = 0
    left_out: list[LeftOutRow] = Field(default_factory=list)
    email_conflicts: list[EmailConflict] = Field(default_factory=list)
    problems: dict[str, int] = Field(default_factory=dict, description="problems on records, by code")


RECORD_MEMBERS: dict[str, type[BaseModel]] = {
    USERS_MEMBER: ExportedUser,
    BADGES_MEMBER: ExportedBadge,
    GROUPS_MEMBER: ExportedGroup,
    GRANTS_MEMBER: ExportedGrant,
}

M = TypeVar("M", bound=BaseModel)


class FullExportError(ValueError):
    """A member of a full-fidelity export that cannot be read; ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def image_member(body_hash: str, badge_id: int, media_type: str) -> str:
    """Where a badge's image lives in the ZIP."""
    stem = body_hash if _SAFE_HASH.fullmatch(body_hash) else f"badge-{badge_id}"
    return f"{IMAGES_PREFIX}{stem}.{IMAGE_EXTENSIONS[media_type]}"


def to_line(record: BaseModel) -> bytes:
    """One JSON Lines line (compact, UTF-8, newline-terminated)."""
    return record.model_dump_json().encode() + b"\n"


def parse_format(raw: bytes) -> ExportFormat | None:
    """The export's format when ``raw`` (the bytes of ``format.json``) names this format;
    None when it names none. A version this reader does not know is an error."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        return None
    try:
        found = ExportFormat.model_validate(data)
    except ValidationError as error:
        raise FullExportError(
            Problem(code="FORMAT_BAD", message=f"format.json is not a valid description: {_first(error)}")
        ) from None
    if found.version != FORMAT_VERSION:
        raise FullExportError(
            Problem(
                code="FORMAT_VERSION_UNKNOWN",
                message=f"This is version {found.version} of the full-fidelity export; "
                f"only version {FORMAT_VERSION} can be read.",
            )
        )
    return found


def iter_jsonl(
    lines: Iterable[bytes],
    model: type[M],
    *,
    member: str = "",
    on_error: Callable[[int, Problem], None] | None = None,
) -> Iterator[M]:
    """Each line of a JSON Lines stream as ``model``, one at a time (memory flat).

    A line that is not a valid record raises :class:`FullExportError`, or, with ``on_error``,
    is passed to it with its line number (from 1) and skipped, so the rest goes on.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield model.model_validate_json(line)
        except ValidationError as error:
            problem = Problem(
                code="RECORD_INVALID",
                message=f"Line {number} of {member or 'the member'} is not a valid "
                f"{model.__name__}: {_first(error)}",
            )
            if on_error is None:
                raise FullExportError(problem) from None
            on_error(number, problem)


def iter_member(
    archive: zipfile.ZipFile,
    member: str,
    model: type[M] | None = None,
    *,
    on_error: Callable[[int, Problem], None] | None = None,
) -> Iterator[M]:
    """The records of one JSONL member of an open export ZIP (``model`` defaults to the one
    the member holds). A member that is absent yields nothing."""
    chosen: Any = model or RECORD_MEMBERS[member]
    try:
        stream: IO[bytes] = archive.open(member)
    except KeyError:
        return
    with stream:
        yield from iter_jsonl(stream, chosen, member=member, on_error=on_error)


def read_report(archive: zipfile.ZipFile) -> ExportReport | None:
    try:
        return ExportReport.model_validate_json(archive.read(REPORT_MEMBER))
    except KeyError:
        return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every member, generated from the models."""
    members: dict[str, type[BaseModel]] = {
        FORMAT_MEMBER: ExportFormat,
        **RECORD_MEMBERS,
        REPORT_MEMBER: ExportReport,
    }
    definitions: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, model in members.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        definitions.update(schema.pop("$defs", {}))
        definitions[model.__name__] = schema
        properties[name] = {"$ref": f"#/$defs/{model.__name__}"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{FORMAT_NAME}, version {FORMAT_VERSION}",
        "description": "Each property is a member of the export ZIP; a .jsonl member holds one "
        "such object per line. Images are under images/<body_hash>.<png|svg>.",
        "type": "object",
        "properties": properties,
        "$defs": dict(sorted(definitions.items())),
    }


def _first(error: ValidationError) -> str:
    detail = error.errors()[0]
    where = ".".join(str(part) for part in detail["loc"]) or "record"
    return f"{where}: {detail['msg']}"
