"""The learner's Badgr connection as the workers use it: stored tokens, refreshes, and the ways
a call to Badgr can end for now (try again later, or wait without it counting as a try)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .domain import Problem

if TYPE_CHECKING:
    from .services import Services

T = TypeVar("T")


class RetryLater(Exception):  # noqa: N818 - it is a request, not an error
    """The import could not finish now; SQS brings the job back after ``delay`` seconds."""

    def __init__(self, problem: Problem, delay: float | None = None) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.delay = delay


class Deferred(Exception):  # noqa: N818 - it is a request, not an error
    """Badgr is not to be called now (its circuit is open, or the shared rate is used up): the
    job waits ``delay`` seconds without that counting as one of its tries. ``reserved_ms`` is
    the rate slot it was given, kept with the job so it need not queue for another."""

    def __init__(self, delay: float, reserved_ms: int | None = None) -> None:
        super().__init__(f"wait {delay:.1f} s")
        self.delay = delay
        self.reserved_ms = reserved_ms


ACCESS_LOST = Problem(
    code="BADGR_ACCESS_LOST",
    message="Badgr no longer lets us add badges to your account: open your link and connect Badgr again.",
)
ACCESS_WAIT = Problem(code="BADGR_BUSY", message="Badgr asked us to wait; we will try again.")
UNAVAILABLE = Problem(code="BADGR_UNAVAILABLE", message="Badgr did not answer; we will try again.")


# A learner's opened tokens (access, refresh, version), kept while one batch of jobs runs; a
# refresh forgets them, so a token Badgr refused is never used again.
KnownTokens = dict[str, tuple[str, str, int]]


def store_tokens(svc: Services, learner_id: str, tokens: Any) -> KnownTokens:
    """Seal and save the learner's new tokens; returns them as a reader of them would open them,
    so whoever stored them need not read and open them back."""
    current = svc.store.get_token(learner_id)
    version = current[1] + 1 if current else 1
    sealed = svc.tokens.seal(tokens.model_dump_json(), learner_id=learner_id)
    if not svc.store.save_token(learner_id, sealed, version):
        raise RuntimeError("the learner's Badgr connection changed meanwhile")
    return {learner_id: (tokens.access_token, tokens.refresh_token, version)}


def tokens_of(svc: Services, learner_id: str, known: KnownTokens | None = None) -> tuple[str, str, int]:
    if known is not None and learner_id in known:
        return known[learner_id]
    stored = svc.store.get_token(learner_id)
    if stored is None:
        raise RetryLater(ACCESS_LOST)
    ciphertext, version = stored
    tokens = json.loads(svc.tokens.open(ciphertext, learner_id=learner_id))
    opened = tokens["access_token"], tokens["refresh_token"], version
    if known is not None:
        known[learner_id] = opened
    return opened


def refresh_tokens(svc: Services, learner_id: str, refresh_token: str, version: int) -> None:
    """Refresh an expired access token. Badgr rotates refresh tokens, so workers of the same
    learner race: the loser's old refresh token is refused, and it takes the winner's tokens."""
    from .badgr import BadgrAuthError, BadgrThrottled, BadgrUnavailable

    try:
        tokens = svc.badgr.refresh(refresh_token)
    except BadgrThrottled as throttled:
        raise RetryLater(ACCESS_WAIT, delay=throttled.retry_after) from throttled
    except BadgrUnavailable as error:
        raise RetryLater(ACCESS_WAIT) from error
    except BadgrAuthError as error:
        stored = svc.store.get_token(learner_id)
        if stored is not None and stored[1] > version:
            return
        raise RetryLater(ACCESS_LOST) from error
    sealed = svc.tokens.seal(tokens.model_dump_json(), learner_id=learner_id)
    svc.store.save_token(learner_id, sealed, version + 1)  # a lost race leaves the winner's tokens


def read_with_token(
    svc: Services, learner_id: str, read: Callable[[str], T], known: KnownTokens | None = None
) -> T:
    """Call a read-only Badgr API with the learner's token, refreshing it once on 401.

    Badgr's failures become ``RetryLater``: nothing was learnt, so nothing may be recorded.
    """
    from .badgr import BadgrAuthError, BadgrThrottled, BadgrUnavailable

    refreshed = False
    while True:
        access_token, refresh_token, version = tokens_of(svc, learner_id, known)
        try:
            return read(access_token)
        except BadgrThrottled as throttled:
            raise RetryLater(ACCESS_WAIT, delay=throttled.retry_after) from throttled
        except BadgrUnavailable as error:
            raise RetryLater(UNAVAILABLE) from error
        except BadgrAuthError as error:
            if known is not None:
                known.pop(learner_id, None)
            if error.status != 401 or refreshed:
                raise RetryLater(ACCESS_LOST) from error
            refresh_tokens(svc, learner_id, refresh_token, version)
            refreshed = True
