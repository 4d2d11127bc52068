"""The README's first command: scripts/demo trains examples/train.py on the embedded default."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mltrail.pipeline.embedded import stop_embedded

ROOT = Path(__file__).resolve().parents[2]


def run_demo(home: Path) -> subprocess.CompletedProcess[str]:
    """As from a user's shell: the clone's .venv not on PATH."""
    from tests.e2e.test_local_services import shell_env

    return subprocess.run([str(ROOT / "scripts" / "demo"), "--epochs", "3"], cwd=ROOT,
                          env=shell_env(home), capture_output=True, text=True, timeout=600)


def test_demo_ends_with_the_summary_twice_and_reuses_the_local_services(tmp_path: Path
                                                                        ) -> None:
    home = tmp_path / "home"
    try:
        first = run_demo(home)
        assert first.returncode == 0, first.stderr[-3000:]
        agent_pid = (home / "embedded" / "agent.json").read_text()
        second = run_demo(home)
        assert second.returncode == 0, second.stderr[-3000:]
        assert (home / "embedded" / "agent.json").read_text() == agent_pid, "not reused"
    finally:
        stopped = stop_embedded(home)
    assert len(stopped) == 2
    for done in (first, second):
        out = done.stdout
        assert "Status:     Completed" in out
        assert "Final metrics:" in out and "accuracy" in out and "confusion_matrix" in out
        assert "outputs/model.pkl" in out and "images/learning_curve/1.png" in out
        assert "mltrail logs " in out
        assert "Traceback" not in done.stderr
    hints_work_as_printed(first.stdout, home, tmp_path)


def hints_work_as_printed(out: str, home: Path, tmp_path: Path) -> None:
    """The "Look further" commands, pasted into a shell that has not activated .venv,
    in another directory (the local services were stopped: they start again)."""
    from tests.e2e.test_local_services import shell_env

    hints = [line.strip() for line in out.split("Look further", 1)[1].splitlines()[1:]
             if line.startswith("  ")]
    assert len(hints) == 5, out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        for hint in hints:
            done = subprocess.run(["bash", "-c", hint], cwd=elsewhere, env=shell_env(home),
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (hint, done.stderr)
            assert "Traceback" not in done.stderr
    finally:
        stop_embedded(home)
