"""The ``mltrail`` entry point imports only the module of the command it runs: its
table of which module adds which commands must be what the modules really add."""

from __future__ import annotations

import argparse
import importlib

import pytest

import mltrail.cli as cli


def test_the_command_table_is_what_each_module_registers() -> None:
    for name, commands in cli._COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


@pytest.mark.parametrize("command", [c for _, cs in cli._COMMAND_MODULES for c in cs])
def test_every_command_parses_alone_as_in_the_full_parser(command: str) -> None:
    alone = cli.build_parser([command])
    full = cli.build_parser()
    assert command in _choices(alone) and set(_choices(full)) >= set(_choices(alone))
    with pytest.raises(SystemExit) as helped:
        cli.main([command, "--help"])
    assert helped.value.code == 0


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []
