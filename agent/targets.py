"""The collectors an agent knows, and which one its next session goes to.

``collector`` is one ``HOST:PORT`` or several, comma-separated; each HOST is
resolved at every pick, and a name with several addresses (a Kubernetes
headless Service, a DNS round robin) counts as that many collectors. A pick
goes round the addresses from a random start (so agents spread over the
replicas) and passes over those marked down. ``failed`` marks an address
down for a short while (1 s, doubling to 30 s while it keeps failing) and
answers whether another one is usable now: then the forwarder fails over at
once instead of backing off on a dead replica. When every address is down
the one that comes back first is picked, and the forwarder's backoff applies.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable

from mltrail.common.credentials import split_scheme
from mltrail.common.net import parse_hostport

DOWN_FIRST = 1.0
DOWN_MAX = 30.0

Resolver = Callable[[str, int], Awaitable[list[str]]]


def plain_targets(spec: str) -> str:
    """A ``collector`` setting without its scheme (https://, grpc://...) per entry: the
    targets are HOST:PORT; whether to use TLS is the ClientSecurity's to say."""
    return ",".join(split_scheme(part.strip())[0] for part in spec.split(","))


def split_targets(spec: str) -> list[str]:
    """The entries of a ``collector`` setting; ValueError names a bad one."""
    entries = [part.strip() for part in spec.split(",") if part.strip()]
    if not entries:
        raise ValueError("collector is empty: give HOST:PORT, or several separated by commas")
    for entry in entries:
        parse_hostport(entry.removeprefix("dns:///"), "collector")
    return entries


async def resolve(host: str, port: int) -> list[str]:
    """Every address of ``host`` (IPv4 if it has any, else IPv6), as HOST:PORT."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    v6 = [f"[{info[4][0]}]" for info in infos if info[0] == socket.AF_INET6]
    return [f"{ip}:{port}" for ip in dict.fromkeys(v4 or v6)]


class CollectorTargets:
    def __init__(self, spec: str, resolver: Resolver = resolve,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.entries = split_targets(spec)
        self._resolver = resolver
        self._clock = clock
        self._turn = (rng or random.Random()).randrange(1 << 16)
        self._down_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self.addresses: list[str] = list(self.entries)

    @property
    def several(self) -> bool:
        return len(self.entries) > 1 or len(self.addresses) > 1

    async def refresh(self) -> list[str]:
        """Resolve every entry again; an entry that does not resolve stays as written
        (the session to it fails and is failed over like a dead replica)."""
        found: list[str] = []
        for entry in self.entries:
            host, port = parse_hostport(entry.removeprefix("dns:///"))
            if _is_literal(host):
                found.append(entry.removeprefix("dns:///"))
                continue
            try:
                found.extend(await self._resolver(host, port))
            except OSError:
                found.append(entry.removeprefix("dns:///"))
        self.addresses = list(dict.fromkeys(found)) or list(self.entries)
        return self.addresses

    async def pick(self) -> str:
        addresses = await self.refresh()
        now = self._clock()
        self._turn += 1
        ordered = [addresses[(self._turn + i) % len(addresses)] for i in range(len(addresses))]
        for address in ordered:
            if self._down_until.get(address, 0.0) <= now:
                return address
        return min(ordered, key=lambda a: self._down_until.get(a, 0.0))

    def failed(self, address: str) -> bool:
        """Mark ``address`` down for a while; True if another address is usable now."""
        count = self._failures.get(address, 0) + 1
        self._failures[address] = count
        now = self._clock()
        self._down_until[address] = now + min(DOWN_MAX, DOWN_FIRST * 2 ** (count - 1))
        return any(self._down_until.get(other, 0.0) <= now
                   for other in self.addresses if other != address)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
        self._down_until.pop(address, None)


COMPRESSIONS = ("auto", "gzip", "none")


def wants_compression(mode: str, address: str) -> bool:
    """Whether to gzip requests to ``address``: "gzip", "none", or "auto" (gzip unless the
    collector is on this host, where compressing costs CPU and saves nothing)."""
    if mode != "auto":
        return mode == "gzip"
    return not all(_is_local(entry) for entry in split_targets(plain_targets(address)))


def _is_local(address: str) -> bool:
    host = address.removeprefix("dns:///").rpartition(":")[0].strip("[]")
    return address.startswith("unix:") or host in ("localhost", "::1") or host.startswith("127.")


def _is_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.strip("[]"))
            return True
        except OSError:
            continue
    return host.startswith("unix:")
