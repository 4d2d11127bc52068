"""CollectorTargets: which collector the agent's next session goes to."""

from __future__ import annotations

import random

import pytest

from mltrail.agent.targets import CollectorTargets, split_targets, wants_compression


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _resolver(host: str, port: int) -> list[str]:
    """A name with three addresses, as a headless Service answers."""
    if host == "collectors.svc":
        return [f"10.0.0.{n}:{port}" for n in (1, 2, 3)]
    raise OSError(f"{host} does not resolve")


async def test_picks_go_round_every_address_of_every_entry() -> None:
    targets = CollectorTargets("collectors.svc:7431, 127.0.0.1:9", resolver=_resolver,
                               rng=random.Random(1))
    picks = [await targets.pick() for _ in range(8)]
    assert set(picks[:4]) == {"10.0.0.1:7431", "10.0.0.2:7431", "10.0.0.3:7431",
                              "127.0.0.1:9"}
    assert picks[4:] == picks[:4]
    assert targets.several


async def test_a_failed_collector_is_passed_over_until_its_pause_ends() -> None:
    clock = _Clock()
    targets = CollectorTargets("127.0.0.1:1,127.0.0.1:2", clock=clock, rng=random.Random(2))
    first = await targets.pick()
    assert targets.failed(first) is True  # the other one is usable now: fail over at once
    assert [await targets.pick() for _ in range(3)] == [targets.addresses[
        1 - targets.addresses.index(first)]] * 3
    other = await targets.pick()
    clock.now += 0.1
    assert targets.failed(other) is False  # both down: the forwarder backs off
    assert await targets.pick() == first  # the one back first
    clock.now += 1.0  # both pauses over
    assert {await targets.pick() for _ in range(2)} == {first, other}
    targets.succeeded(first)
    clock.now += 0.5
    assert targets.failed(other) is True


async def test_a_name_that_does_not_resolve_stays_a_target() -> None:
    targets = CollectorTargets("gone.example:7431", resolver=_resolver)
    assert await targets.pick() == "gone.example:7431"
    assert not targets.several


def test_bad_entries_are_named() -> None:
    with pytest.raises(ValueError, match="'b' is not HOST:PORT"):
        split_targets("a:1,b")
    with pytest.raises(ValueError, match="collector is empty"):
        split_targets(" , ")


def test_compression_is_off_only_when_every_collector_is_local() -> None:
    assert not wants_compression("auto", "127.0.0.1:1,localhost:2")
    assert wants_compression("auto", "127.0.0.1:1,collector.svc:2")
