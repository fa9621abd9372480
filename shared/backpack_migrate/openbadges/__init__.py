"""Open Badges 0.5 / 1.0 / 1.1 / 2.0: unbaking, offline extraction and verification."""

from .errors import FetchError, UnbakeError
from .fetch import FetchedDocument, Fetcher, MapFetcher, SafeFetcher
from .model import (
    BadgeClassInfo,
    Extracted,
    Issue,
    IssuerInfo,
    NormalizedBadge,
    RecipientInfo,
    Verdict,
)
from .parse import extract
from .unbake import unbake
from .verify import Verifier, recipient_matches

__all__ = [
    "BadgeClassInfo",
    "Extracted",
    "FetchError",
    "FetchedDocument",
    "Fetcher",
    "Issue",
    "IssuerInfo",
    "MapFetcher",
    "NormalizedBadge",
    "RecipientInfo",
    "SafeFetcher",
    "UnbakeError",
    "Verdict",
    "Verifier",
    "extract",
    "recipient_matches",
    "unbake",
]
