"""A Lambda instance's init runs with the cyclic garbage collector paused, and ends by freezing it.

Loading boto3, Powertools and pydantic makes 85,000 to 96,000 objects that live as long as the
instance: modules, classes, functions, the models' validators. Left on, the collector walks them
again and again while they are being made (11 to 15 % of a function's cold import), and once
more in the first full collection, which an early invocation pays (10 to 16 ms). Frozen at the
end of init, they are never walked again; what an invocation allocates is collected as usual.
An init that raises leaves the collector paused, but such an instance never serves a request.

Each ``functions/<name>/app.py`` imports this module before anything else and calls
``finished()`` as its last statement. Only the Lambda runtime (``AWS_LAMBDA_RUNTIME_API`` set)
pauses anything: the local stack and the tests import every function into one long-lived process,
where freezing would keep whatever cyclic garbage the rest of the process left behind.
"""

from __future__ import annotations

import gc
import os

_paused = "AWS_LAMBDA_RUNTIME_API" in os.environ and gc.isenabled()
if _paused:
    gc.disable()


def finished() -> None:
    """End of the function's init: freeze what it built and collect from here on."""
    global _paused  # noqa: PLW0603 -- a process's init ends once
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
