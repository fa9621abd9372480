"""Exceptions raised by the Open Badges reader and fetcher."""

from __future__ import annotations

from .messages import message_for


class UnbakeError(Exception):
    """The input could not be read as a badge: `.code` is stable, `.message` is for the learner."""

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.message = message or message_for(code)
        super().__init__(f"{code}: {self.message}")


class FetchError(Exception):
    """A document could not be fetched.

    `kind` is one of: refused (address policy), bad_url, dns, connect, timeout, too_large,
    redirects, http (transport-level failure while reading).
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)
