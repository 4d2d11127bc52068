"""What the read commands share: standard output that never fails on odd text, the JSON
line encoder, how a failed command's stderr is stored, and the follow error."""

from __future__ import annotations

import io
import json
import sys
from typing import TextIO

from mltrail.common.errors import MltrailError

STDERR_HEADER = "last lines of stderr:"  # how `mltrail run` stores a failed command's stderr
# One encoder: json.dumps with options builds a new encoder per call (per log line).
JSON_LINE = json.JSONEncoder(ensure_ascii=False)


class RunDidNotComplete(MltrailError):
    """A followed run ended Failed or Canceled; the message names its error."""


def out() -> TextIO:
    # Log text may hold replacement characters or lone surrogates; never fail on them.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    return sys.stdout
