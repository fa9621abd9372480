"""A hook on every AWS call a function makes from an invocation, as a fault injector or the
local stack's own Lambda look-alike needs it (scaling visibility timeouts, throttling, killing).

Calls made outside an invocation (the stack itself, tests, the demo) are never touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from infra.local.lambda_runtime import count_aws_call, current_invocation

# (service, operation, params) -> params to send instead, or None to keep them; may raise.
AwsCallHook = Callable[[str, str, dict[str, Any]], dict[str, Any] | None]

_hooks: list[AwsCallHook] = []
_lock = threading.Lock()
_original: Any = None


def add_hook(hook: AwsCallHook) -> None:
    """Run ``hook`` before each AWS call made from an invocation (installs the patch once)."""
    global _original  # noqa: PLW0603 - one patch of botocore per process
    from botocore.client import BaseClient

    with _lock:
        if _original is None:
            _original = getattr(BaseClient, "_make_api_call")  # noqa: B009 - private to botocore
            setattr(BaseClient, "_make_api_call", _make_api_call)  # noqa: B010
        _hooks.append(hook)


def remove_hook(hook: AwsCallHook) -> None:
    # The patch itself stays: with no hooks it only passes calls on, and a call in flight on
    # another thread must still find the original method.
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
    hooks = list(_hooks)
    if current_invocation() is not None:
        count_aws_call()  # an invocation doomed to be killed dies at this call
        service = client.meta.service_model.service_name
        for hook in hooks:
            changed = hook(service, operation_name, api_params)
            if changed is not None:
                api_params = changed
    return _original(client, operation_name, api_params)
