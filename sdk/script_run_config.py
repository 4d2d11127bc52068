"""``ScriptRunConfig``: what ``Experiment.submit`` launches (Azure ML v1's, in v1's order).

A script in a source directory with its arguments, or a ``command`` line;
``run_config`` (a ``RunConfiguration``) holds the environment and target,
which mltrail records with the run (``get_details()["runDefinition"]``)
but does not apply: the script runs in the submitting Python.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mltrail.environment import Environment, RunConfiguration
from mltrail.script_run import ScriptRun, submit


class ScriptRunConfig:
    """What to run: a script (or a command) in a source directory."""

    MAX_DURATION_SECONDS_DEFAULT = 2592000

    def __init__(self, source_directory: str | os.PathLike[str], script: str | None = None,
                 arguments: Sequence[Any] | None = None,
                 run_config: RunConfiguration | None = None, _telemetry_values: Any = None,
                 compute_target: Any = None, environment: Environment | None = None,
                 distributed_job_config: Any = None, resume_from: Any = None,
                 max_run_duration_seconds: int = MAX_DURATION_SECONDS_DEFAULT,
                 command: str | Sequence[str] | None = None,
                 docker_runtime_config: Any = None) -> None:
        if script is not None and command is not None:
            raise ValueError("ScriptRunConfig takes script (with arguments) or command, not both")
        self.source_directory = os.fspath(source_directory)
        self.run_config = run_config or RunConfiguration()
        self.script = script or self.run_config.script
        self.arguments = list(arguments if arguments is not None else self.run_config.arguments)
        self.command = command if command is not None else self.run_config.command
        if run_config is None:
            self.run_config.target = compute_target or "local"
            if environment is not None:
                self.run_config.environment = environment
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        self.distributed_job_config = distributed_job_config

    @property
    def environment(self) -> Any:
        return self.run_config.environment

    @environment.setter
    def environment(self, environment: Environment) -> None:
        self.run_config.environment = environment

    def run_definition(self) -> dict[str, Any]:
        """What was asked for, as recorded with the run (``runDefinition``)."""
        definition = self.run_config.to_dict()
        command = self.command
        definition.update(script=self.script, arguments=[str(a) for a in self.arguments],
                          command=command if isinstance(command, str | None)
                          else [str(c) for c in command],
                          sourceDirectory=os.path.abspath(self.source_directory))
        return definition

    def submit_to(self, experiment: Any, tags: dict[str, Any], show_output: bool = False,
                  parent: Any = None, **kwargs: Any) -> ScriptRun:
        """``Experiment.submit(config)`` calls this (v1: the config's submit function)."""
        return submit(experiment, self, tags, show_output, parent)

    def __repr__(self) -> str:
        return (f"ScriptRunConfig(source_directory={self.source_directory!r}, "
                f"script={self.script!r}, arguments={self.arguments!r})")
