"""Whether a badge names a given recipient: plain or hashed (with or without salt), in any case.

Its own module, so that reading recipients out of baked badges (intake, shared files) needs
neither the fetcher nor the signature checks of the verifier.
"""

from __future__ import annotations

import hashlib
import re

from .model import RecipientInfo

HASHED_RE = re.compile(r"^(md5|sha1|sha256|sha384|sha512)\$([0-9a-fA-F]+)$")


def _variants(identifier: str) -> list[str]:
    """The identifier as given, and the ways of writing an email an issuer most likely hashed:
    lower case, upper case, and names capitalised (``Ada.Lovelace@example.org``)."""
    base = identifier.strip()
    out = [base, base.lower()]
    local, at, domain = base.partition("@")
    if at:
        out.append(f"{local}@{domain.lower()}")
        lower = local.lower()
        for capitalised in (
            lower[:1].upper() + lower[1:],
            ".".join(p[:1].upper() + p[1:] for p in lower.split(".")),
        ):
            out += [f"{capitalised}@{domain.lower()}", f"{capitalised}@{domain}"]
    out.append(base.upper())
    return list(dict.fromkeys(out))


def recipient_matches(recipient: RecipientInfo, identifier: str) -> bool:
    """Whether the badge's recipient is this email (or URL, phone, id): hashed or plain, any case."""
    identity = recipient.identity or ""
    if not recipient.hashed:
        return identity.strip().lower() == identifier.strip().lower()
    match = HASHED_RE.match(identity)
    if not match:
        return False
    alg, expected = match.group(1), match.group(2).lower()
    salt = recipient.salt or ""
    for candidate in _variants(identifier):
        digest = hashlib.new(alg, (candidate + salt).encode("utf-8"), usedforsecurity=False).hexdigest()
        if digest == expected:
            return True
    return False
