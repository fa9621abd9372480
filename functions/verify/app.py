"""SQS verify jobs: work out each badge's verdict before the learner opens the page."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from backpack_migrate.migration import verify_learner
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import get_services

processor = BatchProcessor(event_type=EventType.SQS)


class VerifyJob(BaseModel):
    learner_id: str


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    svc = get_services()

    def record_handler(record: SQSRecord) -> None:
        job = VerifyJob.model_validate_json(record.body)
        verify_learner(svc, job.learner_id)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
