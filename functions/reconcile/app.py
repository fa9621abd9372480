"""Scheduled (EventBridge): repair what should have moved on by itself, and settle dead letters."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, LearnerRecord
from backpack_migrate.models import build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.reconcile import reconcile
from backpack_migrate.services import get_services

# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, LearnerRecord, BadgeRecord)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    schedule = parse(event=event, model=EventBridgeModel)  # a Scheduled Event, nothing else
    logger.append_keys(schedule_event=schedule.id)
    return reconcile(get_services(), context.get_remaining_time_in_millis).model_dump()


coldstart.finished()
