# ruff: noqa: E501  (a catalog of sentences reads best one per line)
"""Stable issue codes and the one sentence a learner reads for each of them."""

from __future__ import annotations

# Code -> message. Messages with {placeholders} are filled by `message_for`.
MESSAGES: dict[str, str] = {
    # Reading the file or text the learner gave us.
    "NOT_AN_IMAGE": "This file is not a PNG or SVG badge image.",
    "SVG_UNSAFE": "This SVG image holds instructions to expand or fetch other content, so it was refused as unsafe and not read.",
    "IMAGE_TOO_LARGE": "This file is too large to be a badge image.",
    "NOTHING_BAKED": "This image holds no badge information, so it is only a picture of a badge.",
    "BAKED_DATA_UNREADABLE": "The badge information inside this image is damaged and cannot be read.",
    "NOT_A_BADGE": "This is not an Open Badge: it holds no badge address, badge data or signed badge.",
    "MALFORMED_JSON": "The badge data is damaged (it is not valid JSON) and cannot be read.",
    "UNSUPPORTED_VERSION": "This badge uses a draft or unknown Open Badges format that cannot be checked.",
    # The assertion and its parts.
    "ASSERTION_INCOMPLETE": "The badge record is incomplete or malformed ({detail}).",
    "RECIPIENT_MALFORMED": "The badge does not say properly who earned it ({detail}).",
    "VERIFICATION_UNKNOWN": "The badge does not say how it can be checked with its issuer.",
    "BADGECLASS_INCOMPLETE": "The issuer's description of this badge is incomplete ({detail}).",
    "ISSUER_INCOMPLETE": "The issuer's profile is incomplete ({detail}).",
    "ISSUER_EMAIL_MISSING": "The issuer's profile gives no contact email address.",
    # Dates.
    "DATE_INVALID": "The badge carries a date that does not exist or cannot be read ({detail}).",
    "ISSUED_IN_FUTURE": "The badge says it was issued in the future, which cannot be right.",
    "EXPIRES_BEFORE_ISSUED": "The badge says it expired before it was issued.",
    "EXPIRED": "This badge expired on {detail}.",
    "ISSUED_ON_MISSING": "The badge does not say when it was issued.",
    # Recipient.
    "RECIPIENT_MISMATCH": (
        "This badge was issued to another email address: add that address to your Badgr account."
    ),
    "RECIPIENT_NOT_CHECKED": "We did not check who this badge was issued to, because no email address was given.",
    # Documents fetched from the issuer's website, per role.
    "ASSERTION_NOT_FOUND": "The issuer's website no longer has this badge.",
    "ASSERTION_UNREACHABLE": (
        "The organization that issued this badge no longer runs the website that proves it."
    ),
    "ASSERTION_NOT_ANSWERING": "The issuer's website did not answer in time, so the badge could not be checked.",
    "ASSERTION_UNREADABLE": "The issuer's website did not return readable badge data at this badge's address.",
    "BADGECLASS_NOT_FOUND": "The issuer's website no longer has the description of this badge.",
    "BADGECLASS_UNREACHABLE": "The website that describes this badge cannot be reached any more.",
    "BADGECLASS_NOT_ANSWERING": "The website that describes this badge did not answer in time.",
    "BADGECLASS_UNREADABLE": "The issuer's description of this badge is damaged and cannot be read.",
    "ISSUER_NOT_FOUND": "The issuer's website no longer has the profile of the organization that issued this badge.",
    "ISSUER_UNREACHABLE": "The organization that issued this badge no longer runs the website that proves it.",
    "ISSUER_NOT_ANSWERING": "The issuer's website did not answer in time, so the badge could not be checked.",
    "ISSUER_UNREADABLE": "The profile of the organization that issued this badge is damaged and cannot be read.",
    "KEY_NOT_FOUND": "The issuer no longer publishes the key needed to check this badge's signature.",
    "KEY_UNREACHABLE": "The website holding the key that checks this badge's signature cannot be reached.",
    "KEY_NOT_ANSWERING": "The website holding the key that checks this badge's signature did not answer in time.",
    "KEY_UNREADABLE": "The key the issuer publishes to check this badge's signature cannot be read.",
    "REVOCATION_LIST_NOT_FOUND": "The issuer's list of withdrawn badges could not be found, so it was not checked.",
    "REVOCATION_LIST_UNREACHABLE": "The issuer's list of withdrawn badges could not be reached, so it was not checked.",
    "REVOCATION_LIST_NOT_ANSWERING": "The issuer's list of withdrawn badges did not answer in time, so it was not checked.",
    "REVOCATION_LIST_UNREADABLE": "The issuer's list of withdrawn badges cannot be read, so it was not checked.",
    "ADDRESS_REFUSED": "The badge points to a private or local network address, which we never contact.",
    # Hosted verification.
    "ORIGIN_MISMATCH": "The badge is hosted on a website that does not belong to the organization that issued it.",
    "ASSERTION_ID_MISMATCH": "The badge found at the issuer's address is not the same badge.",
    "NOT_VERIFIABLE": "This badge came as data alone, without the address at its issuer that proves the issuer made it, so it cannot be verified and Badgr cannot accept it.",
    # Signed verification.
    "JWS_MALFORMED": "The badge's digital signature is damaged and cannot be read.",
    "JWS_ALGORITHM": "The badge is signed with a method that Open Badges does not allow.",
    "JWS_PAYLOAD_UNREADABLE": "The signed badge does not contain readable badge data.",
    "SIGNATURE_INVALID": "The badge's digital signature does not match, so it may have been altered.",
    "SIGNATURE_MISSING": "This badge should carry a digital signature, but none came with it.",
    "KEY_INVALID": "The key the issuer publishes to check this badge's signature is not a usable RSA key.",
    "KEY_NOT_ISSUERS": "The key that signed this badge does not belong to the organization that issued it.",
    "KEY_UNKNOWN": "The badge does not say which key its signature can be checked with.",
    "CHECK_FAILED": "Something went wrong while checking this badge, so it will need to be checked again.",
    # Revocation.
    "REVOKED": "The issuer has withdrawn (revoked) this badge{detail}.",
}

# Errors that Badgr's own verification would also fail on. Everything else that blocks is either
# a recipient question (the learner's Badgr account may hold other addresses) or possibly temporary.
NOT_CERTAIN = frozenset(
    {
        "RECIPIENT_MISMATCH",
        "ASSERTION_NOT_ANSWERING",
        "BADGECLASS_NOT_ANSWERING",
        "ISSUER_NOT_ANSWERING",
        "KEY_NOT_ANSWERING",
        "CHECK_FAILED",
    }
)

# Errors that do not stop an import on their own (Badgr decides with the learner's own addresses).
NON_BLOCKING_ERRORS = frozenset({"RECIPIENT_MISMATCH"})


def message_for(code: str, detail: str | None = None) -> str:
    template = MESSAGES.get(code, "This badge could not be checked.")
    if "{detail}" in template:
        if code == "REVOKED":
            reason = detail.strip().rstrip(".") if detail else ""
            return template.format(detail=f" ({reason})" if reason else "")
        return template.format(detail=detail or "unknown")
    return template
