"""S3 ObjectCreated on exports/: read the export and queue its learners in chunks.

An intake short of time hands the rest of the manifest to an intake job on its own queue; the
same function goes on with it (SQS records, one at a time).
"""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext

from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, ExportRecord, LearnerRecord
from backpack_migrate.export import ExportPlan
from backpack_migrate.intake import ChunkJob, IntakeJob, read_export, resume_intake
from backpack_migrate.models import build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import Services, get_services

# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, ExportRecord, ExportPlan, LearnerRecord, BadgeRecord, ChunkJob)


if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | PartialItemFailureResponse:
    records = event.get("Records") or [{}]
    if records[0].get("eventSource") == "aws:sqs":
        # Only an export too long for one invocation is resumed from the queue, so the batch
        # utility loads with the first such job rather than with every upload's cold start.
        from backpack_migrate.batch import run_sqs_batch

        return run_sqs_batch(event, context, lambda svc, record: _resume(svc, record, context))
    return _uploaded(parse(event=event, model=S3Model), context)


def _resume(svc: Services, record: SQSRecord, context: LambdaContext) -> None:
    job = IntakeJob.model_validate_json(record.body)
    resume_intake(svc, job, context.get_remaining_time_in_millis)


def _uploaded(event: S3Model, context: LambdaContext) -> dict[str, Any]:
    svc = get_services()
    svc.register_context(context)
    exports = []
    for record in event.Records:
        if record.s3.object is None:  # only ObjectCreated events reach this function
            continue
        job = {
            "bucket": record.s3.bucket.name,
            "key": unquote_plus(record.s3.object.key),
            "etag": record.s3.object.eTag or "",
            "size": record.s3.object.size or 0,
            "version_id": record.s3.object.versionId,
        }

        def read(job: dict[str, Any]) -> dict[str, Any]:
            export = read_export(svc, **job, remaining_ms=context.get_remaining_time_in_millis)
            return export.model_dump(mode="json")

        result = svc.once("intake", read)(job=job)
        exports.append({"export_id": result["export_id"], "status": result["status"]})
    return {"exports": exports}


coldstart.finished()
