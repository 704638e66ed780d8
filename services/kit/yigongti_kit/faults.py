"""Fault points for crash tests.

A test starts a service with YGT_FAULT_POINT=<name> and YGT_FAULT_MARKER=<file>;
the first time the code passes that point the process SIGKILLs itself (and
creates the marker so the restarted process runs through). Costs one dict
lookup when unset.
"""

from __future__ import annotations

import os
import signal

_POINT = os.environ.get("YGT_FAULT_POINT", "")
_MARKER = os.environ.get("YGT_FAULT_MARKER", "")
_AFTER = int(os.environ.get("YGT_FAULT_AFTER", "1"))  # die on the Nth pass
_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    if name != _POINT:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] < _AFTER:
        return
    if _MARKER:
        if os.path.exists(_MARKER):
            return
        with open(_MARKER, "w") as f:
            f.write(name)
    os.kill(os.getpid(), signal.SIGKILL)
