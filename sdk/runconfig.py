"""v1's ``azureml.core.runconfig``: ``RunConfiguration`` (see ``mltrail.environment``)."""

from mltrail.environment import RunConfiguration

__all__ = ["RunConfiguration"]
