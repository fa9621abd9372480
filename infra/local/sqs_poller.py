"""Lambda's SQS event source mapping, played by poller threads, with SQS's own timing.

As on AWS:
* a received message stays invisible for the queue's ``VisibilityTimeout``; a function that
  fails (or fails a record through ``ReportBatchItemFailures``) does not bring it back sooner;
  a ``ChangeMessageVisibility`` the function makes on a message it holds sets when it returns;
* each receive counts (``ApproximateReceiveCount``), and a message received more than the
  queue's ``maxReceiveCount`` times goes to the dead-letter queue instead of the function;
* a message is never delivered again while its invocation still runs: the template keeps each
  queue's visibility at six times its function's timeout, so on AWS it cannot happen; here the
  timeouts are not scaled and the machine may be slow, so the poller waits for the invocation.

Every duration is multiplied by ``time_scale``, so tests see minutes of AWS time in seconds.
The messages are held in moto for hours; this module makes them visible when SQS would.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.local.cloudformation import REGION
from infra.local.lambda_runtime import FunctionSpec, InvocationKilled, Invoker

log = logging.getLogger("backpack_migrate.local_stack")

# How long moto holds a received message, and again after the function changes its visibility
# (SQS caps the total at 12 hours); the poller releases it when SQS would.
_HOLD_SECONDS = 36_000
_HOLD_AGAIN_SECONDS = 3_600


@dataclass
class SqsSource:
    function: FunctionSpec
    queue_logical_id: str
    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window_s: float
    max_concurrency: int
    report_failures: bool
    visibility_timeout_s: float = 30.0
    max_receive_count: int | None = None
    dlq_url: str | None = None


@dataclass
class _Held:
    source: SqsSource
    receipt_handle: str
    visible_at: float
    running: bool = False  # its invocation has not ended yet


class SqsPollers:
    """The pollers of every SQS event source mapping, and the messages they hold."""

    def __init__(
        self,
        client: Callable[[str], Any],
        invoker: Invoker,
        stop: threading.Event,
        *,
        time_scale: float,
        poll_interval: float,
    ) -> None:
        self._client = client
        self._invoker = invoker
        self._stop = stop
        self.time_scale = time_scale
        self._poll_interval = poll_interval
        self._held: dict[str, _Held] = {}  # by receipt handle
        self._lock = threading.Lock()
        self.sources: list[SqsSource] = []
        self.receives = 0  # deliveries to functions, first ones and retries
        self.redeliveries: dict[str, int] = {}  # per queue (logical id): deliveries after the first
        self.redriven = 0  # messages moved to a dead-letter queue

    def threads(self) -> list[tuple[Callable[[], None], str]]:
        """What to run, each on a thread of its own: the pollers and the visibility clock."""
        found: list[tuple[Callable[[], None], str]] = [(self._release_loop, "local-sqs-visibility")]
        for source in self.sources:
            for n in range(source.max_concurrency):
                found.append(
                    (functools.partial(self._worker, source), f"local-sqs-{source.queue_logical_id}-{n}")
                )
        return found

    # -- the function's own calls -------------------------------------------------------------
    def on_aws_call(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """A function changing the visibility of a message it holds: SQS's clock, scaled."""
        if service != "sqs" or operation != "ChangeMessageVisibility":
            return None
        handle = str(params.get("ReceiptHandle", ""))
        with self._lock:
            held = self._held.get(handle)
            if held is None:
                return None
            held.visible_at = time.monotonic() + float(params.get("VisibilityTimeout", 0)) * self.time_scale
        # moto keeps holding it; the visibility clock releases it when due.
        return {**params, "VisibilityTimeout": _HOLD_AGAIN_SECONDS}

    # -- visibility ---------------------------------------------------------------------------
    def _release_loop(self) -> None:
        sqs = self._client("sqs")
        tick = min(self._poll_interval, 0.05)
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [
                    (h, held) for h, held in self._held.items() if held.visible_at <= now and not held.running
                ]
                for handle, _ in due:
                    del self._held[handle]
            for handle, held in due:
                with contextlib.suppress(Exception):  # deleted meanwhile: nothing to release
                    sqs.change_message_visibility(
                        QueueUrl=held.source.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
                    )
            self._stop.wait(tick)

    def _hold(self, source: SqsSource, messages: list[dict[str, Any]]) -> None:
        visible_at = time.monotonic() + source.visibility_timeout_s * self.time_scale
        with self._lock:
            for message in messages:
                self._held[message["ReceiptHandle"]] = _Held(source, message["ReceiptHandle"], visible_at)

    def _settle(self, source: SqsSource, done: list[dict[str, Any]]) -> None:
        sqs = self._client("sqs")
        with self._lock:
            for message in done:
                self._held.pop(message["ReceiptHandle"], None)
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            sqs.delete_message_batch(QueueUrl=source.queue_url, Entries=entries)

    # -- polling ------------------------------------------------------------------------------
    def _receive(self, source: SqsSource) -> list[dict[str, Any]]:
        sqs = self._client("sqs")
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + source.batching_window_s
        while not self._stop.is_set():
            wanted = min(10, source.batch_size - len(messages))
            response = sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=wanted,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                VisibilityTimeout=_HOLD_SECONDS,
                WaitTimeSeconds=1 if not messages else 0,
            )
            got = [m for m in response.get("Messages", []) if not self._to_dlq_if_exhausted(source, m)]
            self._hold(source, got)
            messages.extend(got)
            if len(messages) >= source.batch_size or time.monotonic() >= deadline:
                break
            if not response.get("Messages"):
                time.sleep(min(self._poll_interval, max(0.0, deadline - time.monotonic())))
        return messages

    def _to_dlq_if_exhausted(self, source: SqsSource, message: dict[str, Any]) -> bool:
        """Redrive a message received more than maxReceiveCount times (where moto did not)."""
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if source.max_receive_count is None or source.dlq_url is None or count <= source.max_receive_count:
            return False
        sqs = self._client("sqs")
        params: dict[str, Any] = {"QueueUrl": source.dlq_url, "MessageBody": message["Body"]}
        if message.get("MessageAttributes"):
            params["MessageAttributes"] = message["MessageAttributes"]
        sqs.send_message(**params)
        sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        with self._lock:
            self.redriven += 1
        return True

    def _worker(self, source: SqsSource) -> None:
        while not self._stop.is_set():
            try:
                # Received messages are in flight, so wait_idle sees them until they are settled.
                messages = self._receive(source)
                if messages:
                    with self._invoker.running_one():
                        self._process_batch(source, messages)
            except Exception:
                if not self._stop.is_set():
                    log.exception("polling %s failed", source.queue_logical_id)
                    self._stop.wait(self._poll_interval)

    def _process_batch(self, source: SqsSource, messages: list[dict[str, Any]]) -> None:
        again = sum(
            1 for m in messages if int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")) > 1
        )
        with self._lock:
            self.receives += len(messages)
            key = source.queue_logical_id
            self.redeliveries[key] = self.redeliveries.get(key, 0) + again
        event = sqs_event(source, messages)
        ids = {m["MessageId"] for m in messages}
        failed: set[str]
        self._mark_running(messages, True)
        try:
            result = self._invoker.invoke(source.function, event)
        except InvocationKilled:
            log.warning("%s was killed on a batch of %d", source.function.logical_id, len(messages))
            failed = set(ids)
        except Exception:
            log.exception("%s failed on a batch of %d", source.function.logical_id, len(messages))
            failed = set(ids)
        else:
            failed = set()
            if source.report_failures and isinstance(result, dict) and result.get("batchItemFailures"):
                reported = {
                    item.get("itemIdentifier") if isinstance(item, dict) else None
                    for item in result["batchItemFailures"]
                }
                # An unknown or empty identifier makes Lambda treat the whole batch as failed.
                failed = ids if not reported <= ids else reported  # type: ignore[assignment]
        try:
            # What failed stays held until its visibility ends, as in SQS.
            self._settle(source, [m for m in messages if m["MessageId"] not in failed])
        finally:
            self._mark_running(messages, False)

    def _mark_running(self, messages: list[dict[str, Any]], running: bool) -> None:
        with self._lock:
            for message in messages:
                held = self._held.get(message["ReceiptHandle"])
                if held is not None:
                    held.running = running


def sqs_event(source: SqsSource, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS poller hands the function."""
    records = []
    for message in messages:
        attributes = {k: str(v) for k, v in message.get("Attributes", {}).items()}
        message_attributes = {}
        for name, value in message.get("MessageAttributes", {}).items():
            converted: dict[str, Any] = {
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            if "StringValue" in value:
                converted["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                raw = value["BinaryValue"]
                converted["binaryValue"] = base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
            message_attributes[name] = converted
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": source.queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
