"""moto's server finds the backend of each request without listing its own package every time.

For every request, moto's server asks whether the host names one of its service modules, and
answers by listing moto's package directory and testing each entry for a directory (some 150
system calls), inside the lock every request takes to find its backend. With a dozen functions'
pollers and workers calling at once, that lock was where the local stack spent most of its
time. The modules of an installed moto do not change while a process runs: they are listed once.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False


def list_moto_modules_once() -> None:
    global _done  # noqa: PLW0603 - one patch of moto per process
    import moto.backends

    with _lock:
        if _done:
            return
        modules = tuple(moto.backends.list_of_moto_modules())
        moto.backends.list_of_moto_modules = lambda: modules
        _done = True
