"""A hook on every AWS call a function makes from an invocation, as a fault injector or the
local stack's own Lambda look-alike needs it (scaling visibility timeouts, throttling, killing).

Calls made outside an invocation (the stack itself, tests, the demo) are never touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from infra.local.lambda_runtime import count_aws_call, current_invocation

# (service, operation, params) -> params to send instead, or None to keep them; may raise
# (an error the caller sees, or :class:`Answer` to answer the call without sending it).
AwsCallHook = Callable[[str, str, dict[str, Any]], dict[str, Any] | None]


class Answer(Exception):  # noqa: N818 - a way out of the hook chain, not an error
    """Raised by a hook that answers the call itself: ``response`` is what the client returns."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__("answered locally")
        self.response = response


_hooks: list[AwsCallHook] = []
_everywhere: list[AwsCallHook] = []  # also for calls made outside invocations
_lock = threading.Lock()
_original: Any = None


def add_hook(hook: AwsCallHook, *, everywhere: bool = False) -> None:
    """Run ``hook`` before each AWS call made from an invocation (or, ``everywhere``, before
    every call of this process); installs the patch once."""
    global _original  # noqa: PLW0603 - one patch of botocore per process
    from botocore.client import BaseClient

    with _lock:
        if _original is None:
            _original = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private to botocore
            setattr(BaseClient, "_make_api_call", _make_api_call)  # noqa: B010
        (_everywhere if everywhere else _hooks).append(hook)


def remove_hook(hook: AwsCallHook) -> None:
    # The patch itself stays: with no hooks it only passes calls on, and a call in flight on
    # another thread must still find the original method.
    with _lock:
        for hooks in (_hooks, _everywhere):
            if hook in hooks:
                hooks.remove(hook)


def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
    hooks = list(_everywhere)
    if current_invocation() is not None:
        count_aws_call()  # an invocation doomed to be killed dies at this call
        hooks = list(_hooks) + hooks
    if hooks:
        service = client.meta.service_model.service_name
        try:
            for hook in hooks:
                changed = hook(service, operation_name, api_params)
                if changed is not None:
                    api_params = changed
        except Answer as answer:
            return answer.response
    return _original(client, operation_name, api_params)
