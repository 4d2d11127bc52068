"""The committed generated modules must match what the pinned codegen produces."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "proto_codegen.sh"), str(tmp_path)],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stderr
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated, "codegen produced nothing"
    stale = [
        n for n in generated
        if not filecmp.cmp(tmp_path / n, ROOT / "proto" / n, shallow=False)
    ]
    assert not stale, f"run scripts/proto_codegen.sh and commit: stale {stale}"
