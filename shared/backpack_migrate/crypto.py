"""Keys and ciphers: learner ids, emails encrypted under a per-export data key, Badgr tokens under KMS.

No plaintext email or token ever leaves this module except to the code that needs it right now.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from typing import Any

from .domain import normalize_email


def learner_id_for(email: str, secret: bytes) -> str:
    """A stable, unguessable id for a learner: the same email in a re-upload gets the same id."""
    digest = hmac.new(secret, b"learner:" + normalize_email(email).encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def erasure_mark(learner_id: str) -> str:
    """What marks an erased learner: a digest of their id (itself an HMAC of the email), so the
    mark names no one and holds no id, yet the same learner in any later export is known by it."""
    return hashlib.sha256(b"erased:" + learner_id.encode()).hexdigest()[:32]


def badge_id_for(learner_id: str, export_id: str, file_name: str) -> str:
    """A badge is a file of one export: the same learner and file name in another export (a
    corrected re-upload, another Backpack export) is another badge, read from its own bytes."""
    return hashlib.sha256(f"{learner_id}/{export_id}/{file_name}".encode()).hexdigest()[:24]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EmailCipher:
    """AES-GCM under one KMS data key per export: one KMS call per export, not per learner.

    The learner id is the associated data, so a ciphertext cannot be moved to another learner.
    """

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._plain_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def new_data_key(self, export_id: str) -> str:
        answer = self._kms.generate_data_key(
            KeyId=self._key_id, KeySpec="AES_256", EncryptionContext={"export": export_id}
        )
        ciphertext = _b64(answer["CiphertextBlob"])
        with self._lock:
            self._plain_keys[ciphertext] = answer["Plaintext"]
        return ciphertext

    def _data_key(self, data_key_ciphertext: str, export_id: str) -> bytes:
        with self._lock:
            cached = self._plain_keys.get(data_key_ciphertext)
        if cached is not None:
            return cached
        plain: bytes = self._kms.decrypt(
            CiphertextBlob=base64.b64decode(data_key_ciphertext),
            EncryptionContext={"export": export_id},
        )["Plaintext"]
        with self._lock:
            self._plain_keys[data_key_ciphertext] = plain
        return plain

    def encrypt(self, email: str, *, learner_id: str, export_id: str, data_key_ciphertext: str) -> str:
        nonce = os.urandom(12)
        key = self._data_key(data_key_ciphertext, export_id)
        # Imported on first use: functions that never seal or open an email do not load it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        sealed = AESGCM(key).encrypt(nonce, normalize_email(email).encode(), learner_id.encode())
        return _b64(nonce + sealed)

    def encrypt_text(self, text: str, *, learner_id: str, export_id: str, data_key_ciphertext: str) -> str:
        """Any text (a learner's list of addresses) sealed as emails are, without normalizing it."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        key = self._data_key(data_key_ciphertext, export_id)
        return _b64(nonce + AESGCM(key).encrypt(nonce, text.encode(), learner_id.encode()))

    def decrypt(self, ciphertext: str, *, learner_id: str, export_id: str, data_key_ciphertext: str) -> str:
        raw = base64.b64decode(ciphertext)
        key = self._data_key(data_key_ciphertext, export_id)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key).decrypt(raw[:12], raw[12:], learner_id.encode()).decode()


class TokenVault:
    """Badgr tokens, encrypted by KMS itself and bound to the learner by encryption context."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id

    def seal(self, plaintext: str, *, learner_id: str) -> str:
        answer = self._kms.encrypt(
            KeyId=self._key_id, Plaintext=plaintext.encode(), EncryptionContext={"learner": learner_id}
        )
        return _b64(answer["CiphertextBlob"])

    def open(self, ciphertext: str, *, learner_id: str) -> str:
        answer = self._kms.decrypt(
            CiphertextBlob=base64.b64decode(ciphertext), EncryptionContext={"learner": learner_id}
        )
        plain: bytes = answer["Plaintext"]
        return plain.decode()
