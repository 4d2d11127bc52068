"""The mltrail agent: SDK receiver -> spool (write-ahead log) -> forwarder.

Public names, imported lazily so ``mltrail.agent.spool`` stays light for the
SDK: ``Spool`` (the on-disk spool, synchronous and thread-safe),
``drain_spool`` and ``DrainResult`` (forward a spool directory to a
collector, for ``mltrail sync``), ``AgentSettings``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AgentSettings", "DrainResult", "Position", "Spool", "drain_spool"]

_WHERE = {
    "Spool": "mltrail.agent.spool",
    "Position": "mltrail.agent.spool",
    "drain_spool": "mltrail.agent.drain",
    "DrainResult": "mltrail.agent.drain",
    "AgentSettings": "mltrail.agent.settings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mltrail.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
