"""Every example in README.md runs, so the docs cannot drift from the code.

- ```python blocks run in order as one script against a real agent and collector;
- ```bash blocks are CLI commands, run in order afterwards with bash -e;
- ```toml blocks must load as the component's settings with exactly the
  code's defaults (a renamed key or changed default fails here);
- ```sh blocks: the service commands are started (paths and ports moved to
  a temp dir), must come up, and exit 0 on SIGTERM; scripts/demo has its own
  test and scripts/test is what runs this test.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mltrail.agent.settings import AgentSettings
from mltrail.collector.settings import CollectorSettings
from mltrail.common.settings import load_settings
from tests.procs import Service

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(kind: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [body for lang, body in BLOCK.findall(text) if lang == kind]


def env_for(agent: Service, collector: Service, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
            "MLTRAIL_COLLECTOR": collector.grpc, "MLTRAIL_HOME": str(tmp_path / "home"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_python_and_cli_examples_run(agent: Service, collector: Service, tmp_path: Path
                                     ) -> None:
    env = env_for(agent, collector, tmp_path)
    script = "\n".join(blocks("python"))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert out[0] == "Completed", out
    assert out[1].startswith("[1.0, 0.5, 0.333"), out
    assert "'outputs/model.pkl'" in out[4] and "images/loss_curve/1.png" in out[4], out
    assert "training done" in done.stdout and out[-1] == "Completed", out

    cli = "\n".join(blocks("bash"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", cli], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (tmp_path / "model-copy.pkl").read_bytes() == b"trained weights"
    assert "hello" in done.stdout


@pytest.mark.parametrize("name, settings", [("agent.toml", AgentSettings),
                                            ("collector.toml", CollectorSettings)])
def test_settings_examples_list_every_key_with_its_default(
        name: str, settings: type, tmp_path: Path) -> None:
    (body,) = [b for b in blocks("toml") if b.startswith(f"# {name}")]
    path = tmp_path / name
    path.write_text(body)
    loaded = load_settings(settings, file=path)
    assert loaded == settings(), "the README's defaults differ from the code's"
    keys = {line.split("=")[0].strip() for line in body.splitlines() if "=" in line}
    keys |= {line[2:].split(":")[0] for line in body.splitlines() if line.startswith("# sources:")}
    assert keys == {f.name for f in dataclasses.fields(settings)}


def test_the_every_key_agent_toml_takes_the_readmes_sources_tables(tmp_path: Path) -> None:
    every_key = next(b for b in blocks("toml") if b.startswith("# agent.toml"))
    tables = next(b for b in blocks("toml") if b.startswith("[[sources]]"))
    path = tmp_path / "agent.toml"
    path.write_text(every_key + "\n" + tables)
    loaded = load_settings(AgentSettings, file=path)
    assert [s["type"] for s in loaded.sources] == ["file", "cri", "logdir", "docker"]


def test_a_sources_line_beside_sources_tables_is_named_as_the_cause(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('sources = []\n[[sources]]\ntype = "file"\n')
    done = subprocess.run([sys.executable, "-m", "mltrail", "agent", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"mltrail: error: config file {path} is not valid TOML: 'sources' is set twice: a "
        "`sources = ...` line and a [[sources]] or [sources] table cannot both be in one "
        "file; delete the `sources = ...` line and keep the tables (at line 2, column 10)")


def service_commands() -> list[str]:
    commands = []
    for body in blocks("sh"):
        command = body.replace("\\\n", " ")
        if command.startswith("mltrail "):
            commands.append(" ".join(command.split()))
    return commands


def test_service_commands_start_and_stop_cleanly(tmp_path: Path) -> None:
    commands = service_commands()
    assert [c.split()[1] for c in commands] == ["collector", "agent"]
    (tmp_path / "agent.toml").write_text(
        next(b for b in blocks("toml") if b.startswith("# agent.toml")))
    started: list[Service] = []
    try:
        for command in commands:
            args = command.replace("/var/lib/mltrail", str(tmp_path / "var"))
            args = args.replace("/run/mltrail", str(tmp_path / "run"))
            args = re.sub(r"0\.0\.0\.0:743[23]", "127.0.0.1:0", args)
            if started:  # the agent sends to the collector just started
                args = args.replace("127.0.0.1:7431", started[0].grpc)
            args = args.replace("0.0.0.0:7431", "127.0.0.1:0")
            args = args.replace("--config agent.toml", f"--config {tmp_path / 'agent.toml'}")
            (tmp_path / "run").mkdir(exist_ok=True)
            words = args.split()[2:]
            started.append(Service(command.split()[1], words, tmp_path).start())
    finally:
        codes = [svc.terminate(timeout=60) for svc in reversed(started)]
    assert codes == [0, 0]
    assert (tmp_path / "var" / "store.db").exists()  # where the URL says, not under the cwd
    assert "names a relative path" not in started[0].output()


def repl_problems(source: str) -> list[str]:
    """Lines at which the interactive interpreter would refuse the code pasted line
    by line (a statement after an indented block needs a blank line there first)."""
    import codeop

    problems, buffer = [], []
    for number, line in enumerate(source.splitlines(), 1):
        if not buffer and not line.strip():
            continue
        buffer.append(line)
        try:
            compiled = codeop.compile_command("\n".join(buffer), symbol="single")
        except SyntaxError as exc:
            problems.append(f"line {number}: {line!r} ({exc.msg})")
            buffer = []
            continue
        if compiled is not None:
            buffer = []
    return problems


def test_the_python_examples_can_be_pasted_into_the_repl() -> None:
    assert repl_problems("for i in range(2):\n    print(i)\nprint('after')\n")  # the check bites
    for body in blocks("python"):
        assert repl_problems(body) == [], body
