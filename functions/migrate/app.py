"""SQS migration jobs: import one badge each into the learner's Badgr backpack."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

import random
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every job calls Badgr: its client (requests) loads with the function, as the first job would
# load it anyway.
from backpack_migrate.badgr import ImportResult, Tokens
from backpack_migrate.batch import run_sqs_batch
from backpack_migrate.config import Settings
from backpack_migrate.connection import RetryLater
from backpack_migrate.domain import BadgeRecord, LearnerRecord
from backpack_migrate.holdings import Backpacks
from backpack_migrate.migration import run_import_job, summaries_after_batch
from backpack_migrate.models import Model, build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import Services, get_services

MAX_BACKOFF_SECONDS = 900


class ImportJob(Model):
    learner_id: str
    badge_id: str
    attempts: int = 0  # tries spent by earlier messages of this job (it waited out Badgr)
    reserved_ms: int | None = None  # the rate slot it waited for


# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, ImportJob, LearnerRecord, BadgeRecord, Tokens, ImportResult)


def backoff_seconds(receive_count: int, asked: float | None) -> int:
    """Exponential backoff with jitter, or what Badgr asked for when it said how long."""
    if asked is not None:
        return min(MAX_BACKOFF_SECONDS, max(1, int(asked + 0.5)))
    return min(MAX_BACKOFF_SECONDS, 2 ** min(receive_count, 9) + random.randint(0, 3))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    backpacks = Backpacks()  # one listing per learner for the whole batch

    def handle(svc: Services, record: SQSRecord) -> None:
        job = ImportJob.model_validate_json(record.body)
        receive_count = int(record.attributes.approximate_receive_count or 1)
        try:
            run_import_job(svc, job.model_dump(exclude_none=True), receive_count, backpacks)
        except RetryLater as retry:
            svc.queue.delay(
                svc.settings.migrate_queue_url,
                record.receipt_handle,
                backoff_seconds(job.attempts + receive_count, retry.delay),
            )
            raise

    with summaries_after_batch(get_services()):
        return run_sqs_batch(event, context, handle)


coldstart.finished()
