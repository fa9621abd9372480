"""S3 ``ObjectCreated`` notifications and Lambda's asynchronous invocation, played locally.

The watcher lists the watched buckets' object versions and sends one event per new upload,
oldest first; the asynchronous worker runs each event with Lambda's retries (two) and the
function's dead-letter queue after them.
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


def upload_identity(etag: str, version_id: str | None) -> str:
    """What tells one upload of a key from another: its version, or in an unversioned bucket
    (version "null") its ETag."""
    return version_id if version_id and version_id != "null" else etag


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
        self._s3_seen: set[tuple[str, str, str]] = set()
        self._s3_lock = threading.Lock()

    def threads(self) -> list[tuple[Callable[[], None], str]]:
        return [(self._watcher, "local-s3-watch"), (self._async_worker, "local-async-invoke")]

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
        """Deliver one ObjectCreated:Put event for an existing object, as S3 would.

        ``wait=True`` runs the invocation (with Lambda's retries) before returning; otherwise
        it is queued like an asynchronous invoke. Raises when no function is subscribed.
        """
        function = self._s3_target(bucket, key)
        if function is None:
            raise ValueError(f"no function is notified for s3://{bucket}/{key}")
        head = self._client("s3").head_object(Bucket=bucket, Key=key)
        with self._s3_lock:
            self._s3_seen.add((bucket, key, upload_identity(head["ETag"], head.get("VersionId"))))
        event = self._s3_event(bucket, key, int(head["ContentLength"]), head["ETag"], head.get("VersionId"))
        if wait:
            with self._invoker.running_one():
                self._invoke_async(function, event)
        else:
            self.async_queue.put((function, event))

    def scan_buckets(self) -> None:
        """Deliver an ObjectCreated event for every object version not seen yet, oldest first,
        as S3 sends one per upload (an unversioned bucket lists each object as version "null")."""
        s3 = self._client("s3")
        for bucket, prefix, suffix, function in self.watch:
            versions = [
                version
                for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
                for version in page.get("Versions", [])
                if version["Key"].endswith(suffix)
            ]
            for version in sorted(versions, key=lambda v: v["LastModified"]):
                key, etag, version_id = version["Key"], version["ETag"], version.get("VersionId")
                seen = (bucket, key, upload_identity(etag, version_id))
                event = self._s3_event(bucket, key, int(version["Size"]), etag, version_id)
                with self._s3_lock:
                    # Seen and queued in one step: wait_idle must never find an upload seen but
                    # not yet queued, or it would call the stack idle too soon.
                    if seen in self._s3_seen:
                        continue
                    self._s3_seen.add(seen)
                    self.async_queue.put((function, event))

    def _watcher(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_buckets()
            except Exception:  # the stack is shutting down, or moto hiccuped: try again
                if not self._stop.is_set():
                    log.exception("scanning the exports bucket failed")
            self._stop.wait(self.poll_interval)

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
