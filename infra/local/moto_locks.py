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
_query_patched = False
_attributes_patched = False
_receives_patched = False


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


def cheap_sqs_attributes() -> None:
    """moto's SQS computes a queue's whole attribute set, which counts the visible, the in-flight
    and the delayed messages by walking every message the queue holds, to answer questions that
    need none of the counts, so the more jobs a queue held the slower each call on it became:

    - every message sent asks whether a standard queue deduplicates by content (it never does);
    - every message received asks for the queue's retention period, so a receive of ten from a
      queue of 5,000 walked 150,000 messages;
    - ``GetQueueAttributes`` for some names computes the whole set three times for each name;
    - each walk read the clock twice for every message.

    Sends and receives now read what they need directly, a ``GetQueueAttributes`` computes the
    set once, and a walk reads the clock once. The answers are moto's."""
    global _attributes_patched  # noqa: PLW0603 - one patch of moto per process
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Queue, SQSBackend

    with _lock:
        if _attributes_patched:
            return
        original_send = SQSBackend.send_message
        original_get = SQSBackend.get_queue_attributes
        original_attributes: Any = Queue.__dict__["attributes"]  # the property itself
        call = threading.local()

        def attributes(self: Any) -> Any:
            if getattr(call, "sending", False) and not self.fifo_queue:
                return {}  # a standard queue: no content-based deduplication
            memo: dict[int, Any] | None = getattr(call, "memo", None)
            if memo is None:
                return original_attributes.fget(self)
            if id(self) not in memo:
                memo[id(self)] = original_attributes.fget(self)
            return memo[id(self)]

        def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
            call.sending = True
            try:
                return original_send(self, *args, **kwargs)
            finally:
                call.sending = False

        def get_queue_attributes(self: Any, *args: Any, **kwargs: Any) -> Any:
            call.memo = {}
            try:
                return original_get(self, *args, **kwargs)
            finally:
                call.memo = None

        def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
            retention_s = int(self.get_queue(queue_name).message_retention_period)
            return bool(retention_s + message.sent_timestamp / 1000 > unix_time())

        # As moto's Message.visible and Message.delayed have it, with one reading of the clock.
        def messages(self: Any) -> list[Any]:
            now = unix_time_millis()
            return [m for m in self._messages if now > m.visible_at and now >= m.delayed_until]

        def not_visible(self: Any) -> int:
            now = unix_time_millis()
            return sum(1 for m in self._messages if now <= m.visible_at)

        def delayed(self: Any) -> int:
            now = unix_time_millis()
            return sum(1 for m in self._messages if now < m.delayed_until)

        Queue.messages = property(messages)  # type: ignore[assignment,method-assign]
        Queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[assignment,method-assign]
        Queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[assignment,method-assign]
        Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
        SQSBackend.send_message = send_message  # type: ignore[method-assign]
        SQSBackend.get_queue_attributes = get_queue_attributes  # type: ignore[method-assign]
        SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
            is_message_valid_based_on_retention_period
        )
        _attributes_patched = True


def query_by_key() -> None:
    """moto answers every Query by sorting every item of the table first: a query for one
    learner's badges cost a sort of the whole table, which at 20,000 learners took seconds and
    made an export's chunks crawl. A query of the table itself now starts from the items of its
    partition; an index query still walks every item (moto keeps no index) but no longer sorts
    them first (it sorts what it found). The answers are the same: moto sorts the results."""
    global _query_patched  # noqa: PLW0603 - one patch of moto per process
    from moto.dynamodb.models.table import Table

    with _lock:
        if _query_patched:
            return
        original_query, original_all_items = Table.query, Table.all_items
        view = threading.local()  # the items this thread's query starts from

        def all_items(self: Any) -> Any:
            if getattr(view, "table", None) is self:
                return view.items
            return original_all_items(self)

        def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
            index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
            if index_name:
                items: list[Any] = [
                    item
                    for partition in self.items.values()
                    for item in (partition.values() if self.range_key_attr else [partition])
                ]
            elif self.range_key_attr:
                items = list(self.items.get(hash_key, {}).values())
            else:
                found = self.items.get(hash_key)
                items = [found] if found is not None else []
            view.table, view.items = self, items
            try:
                return original_query(self, hash_key, *args, **kwargs)
            finally:
                view.table = view.items = None

        Table.all_items = all_items  # type: ignore[method-assign]
        Table.query = query  # type: ignore[method-assign]
        _query_patched = True


def dynamodb_lock() -> threading.RLock:
    """The lock every DynamoDB request to this process's moto takes (for reading its store)."""
    return _lock


def serialise_sqs_receives() -> None:
    """moto's SQS moves a message past its queue's maxReceiveCount to the dead-letter queue
    inside a receive, without a lock: two receives of one queue at once both pick it, and the
    second fails with "list.remove(x): x not in list", a 500 that loses the messages it had
    already marked received until their visibility runs out. SQS never answers that. Receives
    of one queue are serialised (a long-poll holds its queue's lock for at most its wait, while
    sends and deletes go on)."""
    global _receives_patched  # noqa: PLW0603 - one patch of moto per process
    from moto.sqs.models import SQSBackend

    with _lock:
        if _receives_patched:
            return
        original_receive = SQSBackend.receive_message
        by_queue: dict[str, threading.Lock] = {}

        def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
            with _lock:
                queue_lock = by_queue.setdefault(queue_name, threading.Lock())
            with queue_lock:
                return original_receive(self, queue_name, *args, **kwargs)

        SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
        _receives_patched = True
