"""The collector's web UI and JSON API (``/`` and ``/api/v1/`` on its HTTP port)."""

from mltrail.collector.web.api import Api, ApiError
from mltrail.collector.web.app import WebApp

__all__ = ["Api", "ApiError", "WebApp"]
