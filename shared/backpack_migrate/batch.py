"""How every SQS-triggered function runs its batch: one failed record fails only itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .services import Services, get_services


def run_sqs_batch(
    event: dict[str, Any], context: Any, handle: Callable[[Services, SQSRecord], None]
) -> PartialItemFailureResponse:
    """Handle each record; the failures go back as ``batchItemFailures`` for SQS to redeliver."""
    svc = get_services()
    svc.register_context(context)  # idempotency records then expire with this invocation
    return process_partial_response(
        event=event,
        record_handler=lambda record: handle(svc, record),
        processor=BatchProcessor(event_type=EventType.SQS),
        context=context,
    )
