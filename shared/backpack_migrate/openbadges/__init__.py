"""Open Badges 0.5 / 1.0 / 1.1 / 2.0: unbaking, offline extraction and verification.

The names below are loaded from their modules on first use, not with the package: reading a
baked badge (intake, chunks) then costs neither the fetcher (``requests``) nor the verifier,
which only the functions that verify load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .errors import FetchError, UnbakeError
    from .fetch import FetchedDocument, Fetcher, MapFetcher, SafeFetcher
    from .model import BadgeClassInfo, Extracted, Issue, IssuerInfo, NormalizedBadge, RecipientInfo, Verdict
    from .parse import extract
    from .recipient import recipient_matches
    from .verify import Verifier

# ``unbake`` names a module and its function alike: importing the module (as parse does) would
# bind the name to the module, so the function is bound here, after it.
from .unbake import unbake

_MODULE_OF = {
    "FetchError": "errors",
    "UnbakeError": "errors",
    "FetchedDocument": "fetch",
    "Fetcher": "fetch",
    "MapFetcher": "fetch",
    "SafeFetcher": "fetch",
    "BadgeClassInfo": "model",
    "Extracted": "model",
    "Issue": "model",
    "IssuerInfo": "model",
    "NormalizedBadge": "model",
    "RecipientInfo": "model",
    "Verdict": "model",
    "extract": "parse",
    "recipient_matches": "recipient",
    "Verifier": "verify",
}

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


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, __all__)
