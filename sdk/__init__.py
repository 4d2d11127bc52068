"""mltrail: log and metrics pipeline for ML training runs."""

__version__ = "0.1.0"
