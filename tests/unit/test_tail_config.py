"""Declaring sources: [[sources]] tables and --source flags, refused clearly when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrail.agent.settings import load_agent_settings
from mltrail.agent.sources.config import parse_source, parse_source_flag, parse_sources
from mltrail.common.settings import SettingsError


def test_a_file_source_table() -> None:
    config = parse_source({"type": "file", "name": "trainer", "paths": ["/l/*.log"],
                           "run_id": "r1", "start_at": "end", "rotate_wait": 2})
    assert config.paths == ("/l/*.log",) and config.stream_name == "trainer"
    assert config.start_at == "end" and config.rotate_wait == 2.0


@pytest.mark.parametrize(("table", "problem"), [
    ({"type": "file", "name": "a", "paths": ["x"], "run_id": "r", "colour": 1}, "colour"),
    ({"type": "file", "name": "a", "paths": ["x"]}, "run_id"),
    ({"type": "ftp", "name": "a", "run_id": "r"}, "not one of"),
    ({"type": "file", "name": "a b", "paths": ["x"], "run_id": "r"}, "name"),
    ({"type": "file", "name": "a", "paths": [1], "run_id": "r"}, "list of strings"),
    ({"type": "file", "name": "a", "run_id": "r"}, "needs paths"),
    ({"type": "docker", "name": "a"}, "label"),
    ({"type": "file", "name": "a", "paths": ["x"], "run_id": "r", "start_at": "middle"},
     "start_at"),
    ({"type": "file", "name": "a", "paths": ["x"], "run_id_from": "label:k"},
     "expected path:REGEX or env:NAME"),
    ({"type": "cri", "name": "a", "run_id_from": "path:no-group"}, "needs a group"),
    ({"type": "logdir", "name": "a", "directory": "d", "run_id_from": "path:("}, "bad regex"),
    ({"type": "file", "name": "a", "paths": ["x"], "run_id_from": "env:MLTRAIL_TEST_UNSET"},
     "environment has no MLTRAIL_TEST_UNSET"),
    ({"type": "docker", "name": "a", "label": "k", "run_id_from": "path:(x)"},
     "label:KEY or env:KEY"),
])
def test_bad_tables_are_refused_with_the_reason(table: dict[str, object], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        parse_source(table)


def test_source_flags() -> None:
    table = parse_source_flag("file:/logs/*.log=run-1:trainer")
    assert (table["paths"], table["run_id"], table["stream"]) == (["/logs/*.log"], "run-1",
                                                                  "trainer")
    assert table["name"] == parse_source_flag("file:/logs/*.log=run-1:trainer")["name"]
    assert parse_source_flag("docker:team=ml=run-2")["label"] == "team=ml"
    with pytest.raises(SettingsError, match="TYPE:TARGET=RUN_ID"):
        parse_source_flag("/logs/*.log")


def test_names_must_be_unique() -> None:
    table = {"type": "file", "name": "a", "paths": ["x"], "run_id": "r"}
    with pytest.raises(SettingsError, match="unique"):
        parse_sources([table, table])


def test_agent_settings_read_sources_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[[sources]]\ntype = "logdir"\nname = "automl"\ndirectory = "/o"\n'
                      'run_id = "r"\n')
    settings = load_agent_settings(str(config), environ={})
    assert settings.sources == ({"type": "logdir", "name": "automl", "directory": "/o",
                                 "run_id": "r"},)
    config.write_text('[[sources]]\ntype = "logdir"\nname = "automl"\n')
    with pytest.raises(SettingsError, match="directory"):
        load_agent_settings(str(config), environ={})
    with pytest.raises(SettingsError, match="array of tables"):
        load_agent_settings(None, environ={"MLTRAIL_AGENT_SOURCES": "x"})
