"""SQS chunk jobs: extract the badges of a range of learners (of a 2019 ZIP or a full-fidelity export)."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

import json
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

# Every chunk unbakes badges: the reader of baked badges loads with the function, as the first job
# would load it anyway.
import backpack_migrate.openbadges.parse  # noqa: F401
from backpack_migrate.batch import run_sqs_batch
from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, ExportRecord, LearnerRecord
from backpack_migrate.intake import ChunkJob, process_chunk
from backpack_migrate.models import build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.openbadges.model import Extracted
from backpack_migrate.services import Services

# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, ChunkJob, ExportRecord, LearnerRecord, BadgeRecord, Extracted)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    def handle(svc: Services, record: SQSRecord) -> None:
        if json.loads(record.body).get("kind") == "full":
            # A full-fidelity export's reader loads with its first chunk; a 2019 ZIP's never needs it.
            from backpack_migrate.fullintake import FullChunkJob, process_full_chunk

            full = FullChunkJob.model_validate_json(record.body)
            logger.append_keys(export_id=full.export_id, chunk=full.chunk)
            process_full_chunk(svc, full, context.get_remaining_time_in_millis)
            return
        job = ChunkJob.model_validate_json(record.body)
        logger.append_keys(export_id=job.export_id, chunk=job.chunk)
        process_chunk(svc, job, context.get_remaining_time_in_millis)

    return run_sqs_batch(event, context, handle)


coldstart.finished()
