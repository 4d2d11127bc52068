"""mltrail: log and metrics pipeline for ML training runs.

The Python API follows Azure ML v1's ``azureml.core``: change the import
line (``from mltrail import Run``) and a v1 training script keeps working.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ActivityFailedException", "Experiment", "LogHandler", "Run", "RunFailed",
           "ScriptRunConfig", "WaitTimeout", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `mltrail collector` and `mltrail agent` start without
    # loading the SDK's modules, and the SDK without the CLI's.
    if name == "Run":
        from mltrail.run import Run

        return Run
    if name in ("Experiment", "ScriptRunConfig"):
        from mltrail import experiment

        return getattr(experiment, name)
    if name in ("RunFailed", "WaitTimeout", "ActivityFailedException"):
        # ActivityFailedException: the name Azure ML v1 raises from wait_for_completion.
        from mltrail import script_run

        return getattr(script_run, "RunFailed" if name == "ActivityFailedException" else name)
    if name == "LogHandler":
        from mltrail.logging_handler import LogHandler

        return LogHandler
    raise AttributeError(f"module 'mltrail' has no attribute {name!r}")
