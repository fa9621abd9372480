"""SQS collections jobs: a learner's Backpack groups become Badgr collections once their badges are final."""

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
from backpack_migrate.badgr import Tokens
from backpack_migrate.batch import run_sqs_batch
from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, CollectionRecord, GroupRecord, LearnerRecord
from backpack_migrate.groups import CollectionBusy, make_collections
from backpack_migrate.models import Model, build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import Services

MAX_BACKOFF_SECONDS = 900


class CollectionsJob(Model):
    learner_id: str
    requested_at: str | None = None


# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, CollectionsJob, LearnerRecord, BadgeRecord, GroupRecord, CollectionRecord, Tokens)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    def handle(svc: Services, record: SQSRecord) -> None:
        job = CollectionsJob.model_validate_json(record.body)
        receive_count = int(record.attributes.approximate_receive_count or 1)
        last = receive_count >= svc.settings.migrate_max_receive_count
        try:
            make_collections(svc, job.learner_id, give_up=last, job_id=record.message_id)
        except CollectionBusy as busy:
            wait = busy.delay if busy.delay is not None else 2 ** min(receive_count, 9) + random.randint(0, 3)
            svc.queue.delay(
                svc.settings.collections_queue_url,
                record.receipt_handle,
                min(MAX_BACKOFF_SECONDS, max(1, int(wait))),
            )
            raise

    return run_sqs_batch(event, context, handle)


coldstart.finished()
