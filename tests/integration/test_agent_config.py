"""Agent settings as a user gives them (agent.toml, environment, flags), /healthz, /readyz."""

from __future__ import annotations

import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

from mltrail.agent.settings import load_agent_settings
from tests.agent_client import agent_service
from tests.integration.test_agent_chaos import collector_on, free_port
from tests.procs import Service, mltrail_cli


def healthz(svc: Service, path: str = "/healthz") -> int:
    try:
        with urllib.request.urlopen(f"http://{svc.http}{path}", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('collector = "file:1"\nfsync = "always"\nsegment_bytes = 1000\n')
    env = {"MLTRAIL_COLLECTOR": "env:2", "MLTRAIL_AGENT_SEGMENT_BYTES": "2000",
           "MLTRAIL_HOME": str(tmp_path)}
    settings = load_agent_settings(str(config), {"segment_bytes": 3000}, environ=env)
    assert settings.collector == "env:2"  # MLTRAIL_COLLECTOR beats the file
    assert settings.fsync == "always"
    assert settings.segment_bytes == 3000  # the flag beats the environment
    assert settings.drain_timeout == 30.0
    env["MLTRAIL_AGENT_COLLECTOR"] = "agent-env:3"
    assert load_agent_settings(str(config), environ=env).collector == "agent-env:3"


def test_config_file_sets_socket_mode_and_unknown_keys_are_refused(
    tmp_path: Path, collector: Service
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('socket_mode = "0660"\nfsync = "always"\n')
    agent = agent_service(tmp_path, collector.grpc, "--config", str(config)).start()
    try:
        mode = stat.S_IMODE(Path(agent.info["socket"]).stat().st_mode)
        assert mode == 0o660
    finally:
        assert agent.terminate() == 0
    config.write_text('spool_directory = "/tmp/x"\n')
    result = mltrail_cli("agent", "--config", str(config), env={"MLTRAIL_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "unknown setting 'spool_directory'" in result.stderr
    assert "spool_dir" in result.stderr  # the message lists the known keys
    assert "Traceback" not in result.stderr


def test_a_request_size_past_the_message_limit_is_refused(tmp_path: Path) -> None:
    env = {"MLTRAIL_HOME": str(tmp_path), "MLTRAIL_AGENT_BATCH_MAX_BYTES": str(40 << 20)}
    result = mltrail_cli("agent", env=env)
    assert result.returncode == 1
    assert "batch_max_bytes must be at most 16777216 (16 MiB): 41943040" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_nice_value_out_of_range_is_one_line_error(tmp_path: Path) -> None:
    for component in ("agent", "collector"):
        result = mltrail_cli(component, env={"MLTRAIL_HOME": str(tmp_path),
                                             f"MLTRAIL_{component.upper()}_NICE": "25"})
        assert result.returncode == 1, result.stderr
        assert "nice must be between 0 and 19: 25" in result.stderr
        assert "Traceback" not in result.stderr


def test_readyz_turns_unready_while_the_collector_is_down(tmp_path: Path) -> None:
    """Not ready (worth paging on), still alive (a restart would not help)."""
    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}")
    agent.env = {"MLTRAIL_AGENT_UNHEALTHY_AFTER_SECONDS": "1"}
    agent.start()
    try:
        assert healthz(agent, "/readyz") == 200
        deadline = time.monotonic() + 15
        while healthz(agent, "/readyz") != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthz(agent, "/readyz") == 503
        assert healthz(agent) == 200
        collector.start()
        deadline = time.monotonic() + 15
        while healthz(agent, "/readyz") != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthz(agent, "/readyz") == 200
    finally:
        agent.stop()
        collector.stop()


def test_a_second_agent_on_the_same_spool_is_refused(agent: Service, tmp_path: Path) -> None:
    result = mltrail_cli("agent", "--socket", str(tmp_path / "other.sock"),
                         "--spool", str(tmp_path / "spool"), "--http", "127.0.0.1:0",
                         env={"MLTRAIL_HOME": str(tmp_path)}, timeout=30)
    assert result.returncode == 1
    assert "in use by another process" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "other.sock").exists()


def test_a_misspelled_environment_variable_is_refused_like_an_unknown_key(
        tmp_path: Path) -> None:
    for command, var in (("agent", "MLTRAIL_AGENT_MAX_SPOOL_BYTE"),
                         ("collector", "MLTRAIL_COLLECTOR_MAX_METRICS_SERIES")):
        result = mltrail_cli(command, env={"MLTRAIL_HOME": str(tmp_path), var: "1"})
        assert result.returncode == 1, result.stderr
        assert f"environment variable {var}" in result.stderr
        assert "unknown setting" in result.stderr and "Traceback" not in result.stderr
