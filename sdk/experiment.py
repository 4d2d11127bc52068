"""``mltrail.experiment``: v1's ``azureml.core.experiment`` (``Experiment``), and
``ScriptRunConfig`` beside it.

The class itself lives in ``mltrail.experiment_base``, below the run modules;
importing this module brings ``mltrail.run`` in first, so an ``Experiment``
can always start and list runs.
"""

from __future__ import annotations

from mltrail.experiment_base import Experiment
from mltrail.run import Run
from mltrail.script_run_config import ScriptRunConfig

__all__ = ["Experiment", "Run", "ScriptRunConfig"]
