"""v1's ``azureml.core.conda_dependencies``: ``CondaDependencies`` (see ``mltrail.environment``)."""

from mltrail.environment import CondaDependencies

__all__ = ["CondaDependencies"]
