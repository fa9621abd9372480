"""One DynamoDB request at a time in moto, as DynamoDB's own consistency would have it.

moto's DynamoDB walks its tables' dicts while answering a query and copies whole tables in a
transaction, without a lock: a write of a new item on another thread then fails the call with
"dictionary changed size during iteration", a 500 DynamoDB never answers. The functions run
concurrently on the local stack, so its requests to moto's DynamoDB are serialised (moto holds
the GIL for them anyway).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.RLock()
_original: Any = None


def serialise_dynamodb() -> None:
    global _original  # noqa: PLW0603 - one patch of moto per process
    from moto.dynamodb.responses import DynamoHandler

    with _lock:
        if _original is not None:
            return
        _original = DynamoHandler.call_action

        def call_action(self: Any) -> Any:
            with _lock:
                return _original(self)

        DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def snapshot_sqs_pending() -> None:
    """moto's SQS builds a queue's set of pending FIFO groups by walking the set of messages in
    flight while other requests add to it and remove from it, which fails the call with "Set
    changed size during iteration", a 500 SQS never answers. Walk a copy instead (copying a set
    is one step under the GIL). A lock would not do: a long-polling receive would hold it."""
    from moto.sqs.models import Queue

    def pending_message_groups(self: Any) -> set[str]:
        return {m.group_id for m in list(self._pending_messages) if m.group_id is not None}

    Queue.pending_message_groups = property(pending_message_groups)  # type: ignore[assignment,method-assign]


def dynamodb_lock() -> threading.RLock:
    """The lock every DynamoDB request to this process's moto takes (for reading its store)."""
    return _lock
