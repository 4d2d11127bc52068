"""scripts/test and scripts/demo say what to install when Python lacks venv (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["test", "demo"])
def test_a_python_without_venv_is_named_with_what_to_install(script: str, tmp_path: Path
                                                             ) -> None:
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no ensurepip on this Python')\n")
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={shadow.parent} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    done = subprocess.run([str(ROOT / "scripts" / script)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(python)}, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("Python's venv module is missing; as root: apt-get install "
                           "python3-venv\n")
