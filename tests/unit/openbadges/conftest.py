"""Fixtures for the Open Badges tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from ob_helpers import CORPUS


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "scenarios.json").is_file():
        pytest.skip(f"the Open Badges corpus is not present at {CORPUS} (set OB_CORPUS to point at it)")
    return CORPUS


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
