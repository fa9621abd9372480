"""RS256 compact JWS checking (the only algorithm Open Badges signs with).

``cryptography`` is imported by the two functions that need it, not with this module: most
badges are hosted, and a function that verifies only those never pays for loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

MIN_RSA_BITS = 1024
MAX_PEM_CHARS = 20_000


class InvalidKeyError(ValueError):
    pass


def algorithm_allowed(header: dict[str, Any]) -> bool:
    """RS256 only; 1.0 badges spell it 'rs256'. Anything else (HS256, none, ...) is refused."""
    alg = header.get("alg")
    return isinstance(alg, str) and alg.upper() == "RS256"


def load_rsa_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(pem, str):
        pem = pem.encode("utf-8", "replace")
    if len(pem) > MAX_PEM_CHARS:
        raise InvalidKeyError("too large")
    pem = pem.strip().replace(b"\r\n", b"\n")
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError("not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidKeyError("not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise InvalidKeyError("key too short")
    return key


def signature_valid(key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True
