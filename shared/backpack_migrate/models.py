"""The base of every pydantic model here: a model builds its validator when first used.

A function imports far more models than its jobs use (the web function imports every record,
and reads a few on each page). Built at import, each costs a cold start 1-5 ms; deferred, a
function builds only the ones it touches, once per instance.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

# pydantic's own rebuild is not thread-safe (two threads validating a model for the first time
# can both rebuild it, and one may read the class while the other rewrites it). Verification
# fetches in threads, and the local stack runs functions as threads of one process, so every
# first build here takes this lock. It is re-entrant: building a model builds the models it holds.
_first_build = threading.RLock()


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)

    @classmethod
    def model_rebuild(
        cls,
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        if cls.__pydantic_complete__ and not force:
            return None
        with _first_build:
            return super().model_rebuild(
                force=force,
                raise_errors=raise_errors,
                # One frame more than pydantic counts: this override sits between it and its caller.
                _parent_namespace_depth=_parent_namespace_depth + 1 if _parent_namespace_depth > 0 else 0,
                _types_namespace=_types_namespace,
            )


def build_now(*models: type[Model]) -> None:
    """Build, at a function's init, the models every one of its jobs reads: deferring those
    would only move their cost into the first invocation, which a cold start pays as well."""
    for model in models:
        model.model_rebuild()
