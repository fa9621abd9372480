"""SQS verify jobs: work out each badge's verdict before the learner opens the page."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every job verifies badges: the verifier and the fetcher (requests) load with the function, as
# the first job would load them anyway. Signature checks (cryptography) load with the first
# signed badge, as most badges are hosted.
import backpack_migrate.openbadges.verify  # noqa: F401
from backpack_migrate.batch import run_sqs_batch
from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, ExportRecord, LearnerRecord
from backpack_migrate.migration import verify_learner
from backpack_migrate.models import Model, build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.openbadges.model import Verdict
from backpack_migrate.services import Services


class VerifyJob(Model):
    learner_id: str


# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, VerifyJob, ExportRecord, LearnerRecord, BadgeRecord, Verdict)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    def handle(svc: Services, record: SQSRecord) -> None:
        verify_learner(svc, VerifyJob.model_validate_json(record.body).learner_id)

    return run_sqs_batch(event, context, handle)


coldstart.finished()
