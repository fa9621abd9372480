"""Lambda's side of an invocation, played in this process: the context object, the function's
code, and the bookkeeping of what runs (with the hook a fault injector uses to kill invocations).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from infra.local.cloudformation import ACCOUNT_ID, REGION

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """The attributes and method of the Python runtime's context object that code uses."""

    def __init__(self, function_name: str, memory_mb: int, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: str
    physical_name: str
    memory_mb: int
    timeout_s: int
    dead_letter_arn: str | None = None
    handler: Handler | None = None


class InvocationKilled(BaseException):
    """The invocation was ended from outside (a crash, out of memory, a kill): nothing after the
    point where it is raised runs, and no ``except Exception`` in the function catches it."""


@dataclass
class Invocation:
    function: FunctionSpec
    context: LambdaContext
    kill_at_call: int | None = None  # the AWS call (1, 2, ...) at which this invocation dies
    calls: int = 0


_current = threading.local()


def current_invocation() -> Invocation | None:
    """The invocation running on this thread, if any (each invocation runs on one thread)."""
    invocation: Invocation | None = getattr(_current, "invocation", None)
    return invocation


def count_aws_call() -> None:
    """Called before each AWS call a function makes: ends the invocation where it was doomed to."""
    invocation = current_invocation()
    if invocation is None or invocation.kill_at_call is None:
        return
    invocation.calls += 1
    if invocation.calls >= invocation.kill_at_call:
        invocation.kill_at_call = None  # a dying invocation makes no further calls count
        raise InvocationKilled(f"{invocation.function.logical_id} killed at its AWS call {invocation.calls}")


class Invoker:
    """Runs handlers as Lambda would run them, one invocation per thread, and counts what runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        # Set by a fault injector: for each new invocation, the AWS call at which it dies (or None).
        self.kill_policy: Callable[[FunctionSpec], int | None] | None = None
        self.killed = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    @contextlib.contextmanager
    def running_one(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    def invoke(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        """Run the handler; an invocation killed from outside raises :class:`InvocationKilled`."""
        assert function.handler is not None
        context = LambdaContext(function.physical_name, function.memory_mb, function.timeout_s)
        kill_at = self.kill_policy(function) if self.kill_policy is not None else None
        previous = current_invocation()
        _current.invocation = Invocation(function, context, kill_at)
        try:
            return function.handler(event, context)
        except InvocationKilled:
            with self._lock:
                self.killed += 1
            raise
        finally:
            _current.invocation = previous


def import_file(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        existing = sys.modules[module_name]
        if Path(getattr(existing, "__file__", "") or "").resolve() == path.resolve():
            return existing
    if not path.is_file():
        raise FileNotFoundError(f"handler module {path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
