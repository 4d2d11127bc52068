"""mltrail: log and metrics pipeline for ML training runs.

The Python API follows Azure ML v1's ``azureml.core``: change the import
line (``from mltrail import Run``) and a v1 training script keeps working.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
VERSION = __version__  # v1 notebooks start with print(azureml.core.VERSION)

__all__ = ["VERSION", "ActivityFailedException", "Environment", "Experiment", "LogHandler",
           "Run", "RunConfiguration", "RunFailed", "ScriptRun", "ScriptRunConfig",
           "WaitTimeout", "Workspace", "__version__", "get_run"]

# name -> (module, attribute): each loaded on first use
_LAZY = {
    "Run": ("mltrail.run", "Run"),
    "get_run": ("mltrail.run", "get_run"),
    "Experiment": ("mltrail.experiment", "Experiment"),
    "ScriptRunConfig": ("mltrail.experiment", "ScriptRunConfig"),
    "ScriptRun": ("mltrail.script_run", "ScriptRun"),
    "RunFailed": ("mltrail.script_run", "RunFailed"),
    "WaitTimeout": ("mltrail.script_run", "WaitTimeout"),
    # the name Azure ML v1 raises from wait_for_completion
    "ActivityFailedException": ("mltrail.script_run", "RunFailed"),
    "LogHandler": ("mltrail.logging_handler", "LogHandler"),
    "Workspace": ("mltrail.workspace", "Workspace"),
    "Environment": ("mltrail.environment", "Environment"),
    "RunConfiguration": ("mltrail.environment", "RunConfiguration"),
}


def __getattr__(name: str) -> Any:
    # Imported lazily: `mltrail collector` and `mltrail agent` start without
    # loading the SDK's modules, and the SDK without the CLI's.
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'mltrail' has no attribute {name!r}")
