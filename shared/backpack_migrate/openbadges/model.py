"""The records a verification produces: issues, the normalized badge, the verdict."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from backpack_migrate.domain import Problem, VerdictSummary

from ..models import Model

PayloadKind = Literal["url", "json", "jws"]


class Issue(Model):
    """A stable UPPER_SNAKE code and one sentence a learner understands."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    blocks_import: bool = True


class IssuerInfo(Model):
    id: str | None = None
    name: str | None = None
    url: str | None = None
    email: str | None = None


class BadgeClassInfo(Model):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    image: str | None = None
    criteria: str | None = None  # the criteria URL, else its narrative


class RecipientInfo(Model):
    type: str | None = None
    identity: str | None = None
    hashed: bool = False
    salt: str | None = None


class NormalizedBadge(Model):
    """One shape for badges of every version (0.5, 1.0, 1.1, 2.0)."""

    assertion_id: str | None = None
    uid: str | None = None
    issuer: IssuerInfo = Field(default_factory=IssuerInfo)
    badge_class: BadgeClassInfo = Field(default_factory=BadgeClassInfo)
    recipient: RecipientInfo = Field(default_factory=RecipientInfo)
    issued_on: datetime | None = None
    expires: datetime | None = None
    verification_type: Literal["hosted", "signed"] | None = None
    image: str | None = None
    evidence: str | None = None


class Extracted(Model):
    """What can be known about a badge offline, from its bytes alone."""

    payload_kind: PayloadKind
    payload: str
    assertion: dict[str, Any] | None = None
    jws: str | None = None
    version: str | None = None
    badge_name: str | None = None
    issuer_name: str | None = None
    issued_on: datetime | None = None
    hosted_url: str | None = None


def _web_url(value: str | None) -> str | None:
    if value and value.lower().startswith(("http://", "https://")) and len(value) <= 2048:
        return value
    return None


class Verdict(Model):
    valid: bool
    version: str | None = None
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
    badge: NormalizedBadge | None = None
    revoked: bool = False
    hosted_url: str | None = None
    payload_kind: PayloadKind | None = None
    assertion: dict[str, Any] | None = None
    jws: str | None = None
    certain_to_fail: bool = False

    def to_summary(self) -> VerdictSummary:
        badge = self.badge
        issued = badge.issued_on.isoformat() if badge and badge.issued_on else None
        return VerdictSummary(
            valid=self.valid,
            version=self.version,
            name=badge.badge_class.name if badge else None,
            issuer_name=badge.issuer.name if badge else None,
            issuer_url=_web_url(badge.issuer.url) if badge else None,
            issued_on=issued,
            image_url=_web_url(badge.badge_class.image or badge.image) if badge else None,
            hosted_url=self.hosted_url,
            assertion_id=(badge.assertion_id if badge else None) or self.hosted_url,
            payload_kind=self.payload_kind,
            revoked=self.revoked,
            certain_to_fail=self.certain_to_fail,
            errors=[Problem(code=i.code, message=i.message) for i in self.errors],
            warnings=[Problem(code=i.code, message=i.message) for i in self.warnings],
        )
