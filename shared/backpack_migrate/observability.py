"""The one place that owns Logger, Tracer and Metrics for every function."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "backpack-migrate"
NAMESPACE = "BackpackMigrate"

logger = Logger(service=SERVICE)
# Only the AWS SDK is patched at start: patching every library X-Ray knows would import requests,
# sqlite3, pynamodb and more into every function. Code that calls out over HTTP asks for it.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def trace_http() -> None:
    """Trace ``requests`` calls (Badgr, issuer sites) from now on; X-Ray patches a library once."""
    tracer.patch(("requests",))
