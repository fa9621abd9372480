"""moto holds no object it made beyond its own stores, so a long-running stack's memory follows
what the stores hold, not all the work it ever did.

moto's ``BaseModel`` appends every instance of every model to a list on its class when it is
made, and never takes it out: only the ``/moto-api`` dashboard and S3's reset read those lists.
Every DynamoDB write makes a new item, every SQS send a new message, every S3 listing of
versions a deep copy of each version with its body, so a stack that had moved a thousand
learners' badges held every item, message and copy it had ever made, until the kernel killed the
process for memory. Instances are no longer listed; S3 object bodies are closed when moto drops
the object (``FakeKey.__del__``) instead of at reset.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

_lock = threading.Lock()
_done = False


def forget_model_instances() -> None:
    global _done  # noqa: PLW0603 - one patch of moto per process
    from moto.core.common_models import BaseModel

    with _lock:
        if _done:
            return

        def make_untracked(cls: Any, *args: Any, **kwargs: Any) -> Any:
            return super(BaseModel, cls).__new__(cls)

        BaseModel.__new__ = staticmethod(make_untracked)  # type: ignore[method-assign]
        # A body closed when its object is dropped is closed in time: the warning is moto's
        # reminder to close at reset what its lists held.
        warnings.filterwarnings(
            "ignore", message="S3 key was not disposed of in time", category=ResourceWarning
        )
        _done = True
