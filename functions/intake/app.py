"""S3 ObjectCreated on exports/: read the export and queue its learners in chunks."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext

from backpack_migrate.intake import read_export
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import get_services


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=S3Model)
def handler(event: S3Model, context: LambdaContext) -> dict[str, Any]:
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
        result = svc.once("intake", lambda job: read_export(svc, **job).model_dump(mode="json"))(job=job)
        exports.append({"export_id": result["export_id"], "status": result["status"]})
    return {"exports": exports}
