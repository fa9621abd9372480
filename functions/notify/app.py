"""SQS notify jobs: the invitation and summary emails, at the configured sending rate."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

from typing import Any, Literal

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from backpack_migrate.batch import run_sqs_batch
from backpack_migrate.config import Settings
from backpack_migrate.domain import LearnerRecord
from backpack_migrate.models import Model, build_now
from backpack_migrate.notices import send_notice
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import Services


class NoticeJob(Model):
    kind: Literal["invite", "summary"]
    learner_id: str
    export_id: str | None = None
    requested_at: str | None = None


# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, NoticeJob, LearnerRecord)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    def handle(svc: Services, record: SQSRecord) -> None:
        send_notice(svc, NoticeJob.model_validate_json(record.body).model_dump(exclude_none=True))

    return run_sqs_batch(event, context, handle)


coldstart.finished()
