"""SQS notify jobs: the invitation and summary emails, at the configured sending rate."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from backpack_migrate.notices import send_notice
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import get_services

processor = BatchProcessor(event_type=EventType.SQS)


class NoticeJob(BaseModel):
    kind: Literal["invite", "summary"]
    learner_id: str
    export_id: str | None = None
    requested_at: str | None = None


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    svc = get_services()
    svc.register_context(context)

    def record_handler(record: SQSRecord) -> None:
        job = NoticeJob.model_validate_json(record.body)
        send_notice(svc, job.model_dump(exclude_none=True))

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
