"""Names a package offers but loads from their modules only when first asked for (PEP 562).

A package that re-exports its modules' names would load every module with the package; a
function that needs one of them would pay for all at its cold start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(
    package: str, module_of: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: each name of ``module_of`` is loaded from
    its module (relative to ``package``) when first asked for, then kept on the package."""
    exported = tuple(exported)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's own name
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)  # asked once
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module hook's own name
        return sorted(set(vars(sys.modules[package])) | set(exported))

    return __getattr__, __dir__
