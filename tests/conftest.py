"""Shared test setup: no test can reach real AWS, and the corpus is found where it lives."""

from __future__ import annotations

import os
from pathlib import Path

import moto  # noqa: F401 - imported first so every boto3 client made later is intercepted
import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "ob-corpus"

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "BackpackMigrateTest",
    "POWERTOOLS_DEV": "0",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

# Hypothesis tests here check that hostile input fails cleanly, not how fast: a loaded CI
# machine must not turn a slow example into a failure.
settings.register_profile("backpack-migrate", deadline=None)
settings.load_profile("backpack-migrate")


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "scenarios.json").is_file():
        pytest.skip("the Open Badges corpus (../shared/ob-corpus beside the project) is not present")
    return CORPUS
