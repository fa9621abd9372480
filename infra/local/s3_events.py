"""S3 ``ObjectCreated`` notifications and Lambda's asynchronous invocation, played locally.

S3 sends its notifications itself, once per upload, after it stored the object: here moto's
S3 calls :meth:`S3Events.object_created` from the store operation every upload goes through
(PutObject, CompleteMultipartUpload, CopyObject). An event for a watched bucket is queued at
once, so ``wait_idle`` never finds an upload stored but not yet queued. (Listing the buckets'
versions over and over, as this module once did, made moto deep-copy every object version,
body included, on each poll, and moto keeps a reference to every model object it ever made, so
the copies were never freed: the stack grew by the export's size ten times a second.)
The asynchronous worker runs each event with Lambda's retries (two) and the function's
dead-letter queue after them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.local.cloudformation import REGION
from infra.local.lambda_runtime import FunctionSpec, InvocationKilled, Invoker

log = logging.getLogger("backpack_migrate.local_stack")

# Called with (bucket, key, size, etag, version id) for every object moto's S3 stores.
Listener = Callable[[str, str, int, str, str | None], None]
_listeners: list[Listener] = []
_listeners_lock = threading.Lock()
_moto_hooked = False


def _hook_moto_puts() -> None:
    """Have moto's S3 tell the listeners of every object it stores (once per process)."""
    global _moto_hooked  # noqa: PLW0603 - one patch of moto per process
    from moto.s3.models import S3Backend

    with _listeners_lock:
        if _moto_hooked:
            return
        original_put = S3Backend.put_object

        def put_object(self: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            stored = original_put(self, bucket_name, key_name, *args, **kwargs)
            if not kwargs.get("disable_notification"):
                with _listeners_lock:
                    listeners = list(_listeners)
                for listener in listeners:
                    listener(bucket_name, key_name, int(stored.size), stored.etag, stored.version_id)
            return stored

        S3Backend.put_object = put_object  # type: ignore[method-assign]
        _moto_hooked = True


class S3Events:
    """Watched buckets (bucket, key prefix, key suffix, function) and the asynchronous invokes."""

    def __init__(
        self,
        client: Callable[[str], Any],
        invoker: Invoker,
        stop: threading.Event,
        *,
        async_retry_delays: tuple[float, ...],
        poll_interval: float,
    ) -> None:
        self._client = client
        self._invoker = invoker
        self._stop = stop
        self.async_retry_delays = async_retry_delays
        self.poll_interval = poll_interval
        self.watch: list[tuple[str, str, str, FunctionSpec]] = []
        self.async_queue: queue.Queue[tuple[FunctionSpec, dict[str, Any]]] = queue.Queue()

    def threads(self) -> list[tuple[Callable[[], None], str]]:
        return [(self._async_worker, "local-async-invoke")]

    def listen(self) -> None:
        """Start receiving moto's notice of every stored object (the stack's moto is this
        process's, so the notices are of this stack's buckets)."""
        _hook_moto_puts()
        with _listeners_lock:
            if self.object_created not in _listeners:
                _listeners.append(self.object_created)

    def close(self) -> None:
        with _listeners_lock:
            if self.object_created in _listeners:
                _listeners.remove(self.object_created)

    def object_created(self, bucket: str, key: str, size: int, etag: str, version_id: str | None) -> None:
        """One upload stored: queue its event if a function is notified of it, as S3 would."""
        function = self._s3_target(bucket, key)
        if function is not None:
            self.async_queue.put((function, self._s3_event(bucket, key, size, etag, version_id)))

    @property
    def pending(self) -> int:
        return self.async_queue.unfinished_tasks

    def _s3_event(
        self, bucket: str, key: str, size: int, etag: str, version_id: str | None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        obj: dict[str, Any] = {
            "key": urllib.parse.quote_plus(key, safe="/"),
            "size": size,
            "eTag": etag.strip('"'),
            "sequencer": f"{time.time_ns():X}"[:18],
        }
        if version_id and version_id != "null":
            obj["versionId"] = version_id
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "AWS:AIDALOCALSTACKUPLOADER"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {
                        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                        "x-amz-id-2": base64.b64encode(os.urandom(48)).decode(),
                    },
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "ExportUploaded",
                        "bucket": {
                            "name": bucket,
                            "ownerIdentity": {"principalId": "A3LOCALSTACKOWNER"},
                            "arn": f"arn:aws:s3:::{bucket}",
                        },
                        "object": obj,
                    },
                }
            ]
        }

    def _s3_target(self, bucket: str, key: str) -> FunctionSpec | None:
        for watched, prefix, suffix, function in self.watch:
            if watched == bucket and key.startswith(prefix) and key.endswith(suffix):
                return function
        return None

    def deliver(self, bucket: str, key: str, *, wait: bool = True) -> None:
        """Deliver one more ObjectCreated:Put event for an existing object (a duplicate, as S3
        sends now and then).

        ``wait=True`` runs the invocation (with Lambda's retries) before returning; otherwise
        it is queued like an asynchronous invoke. Raises when no function is subscribed.
        """
        function = self._s3_target(bucket, key)
        if function is None:
            raise ValueError(f"no function is notified for s3://{bucket}/{key}")
        head = self._client("s3").head_object(Bucket=bucket, Key=key)
        event = self._s3_event(bucket, key, int(head["ContentLength"]), head["ETag"], head.get("VersionId"))
        if wait:
            with self._invoker.running_one():
                self._invoke_async(function, event)
        else:
            self.async_queue.put((function, event))

    def _async_worker(self) -> None:
        while not self._stop.is_set():
            try:
                function, event = self.async_queue.get(timeout=self.poll_interval)
            except queue.Empty:
                continue
            with self._invoker.running_one():
                self.async_queue.task_done()
                self._invoke_async(function, event)

    def _invoke_async(self, function: FunctionSpec, event: dict[str, Any]) -> None:
        """Lambda's asynchronous invocation: the first try and two retries, then the DLQ."""
        attempts = 1 + len(self.async_retry_delays)
        for attempt in range(attempts):
            try:
                self._invoker.invoke(function, event)
                return
            except (Exception, InvocationKilled):
                log.exception("%s failed (attempt %d of %d)", function.logical_id, attempt + 1, attempts)
                if attempt < len(self.async_retry_delays):
                    time.sleep(self.async_retry_delays[attempt])
        if function.dead_letter_arn:
            sqs = self._client("sqs")
            url = sqs.get_queue_url(QueueName=function.dead_letter_arn.rsplit(":", 1)[1])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
        log.error("%s gave up on an event after %d attempts", function.logical_id, attempts)
