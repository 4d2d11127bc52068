"""Which collector a command talks to, and how to name commands in hints.

``--collector``, else ``MLTRAIL_COLLECTOR``, else the local collector of
``$MLTRAIL_HOME`` (started if it is not running, as the SDK does, so a ready
file left by a stopped one is never followed). A ``HOST`` without a port gets
the collector's default port 7431.

``program()`` is how this user can type ``mltrail`` again: the bare name when
it is on PATH and is this installation, else the full path of the script
(``scripts/demo`` runs it from a venv the shell has not activated).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from mltrail.common.credentials import ClientSecurity, split_scheme
from mltrail.common.errors import PermanentError
from mltrail.query.client import QueryClient

DEFAULT_PORT = 7431
LOCAL = "local"


def with_port(address: str, what: str) -> str:
    """``HOST`` -> ``HOST:7431``; ``HOST:PORT`` and ``[V6]:PORT`` unchanged; a scheme
    (``https://HOST:PORT``) and ``unix:PATH`` are kept as they are."""
    if address.startswith("unix:"):
        return address
    bare = split_scheme(address)[0]
    if bare != address:  # https://, grpcs://, http://, grpc://
        return address[:address.index("//") + 2] + with_port(bare, what)
    host, sep, port = address.rpartition(":")
    if address.startswith("[") and address.endswith("]"):
        return f"{address}:{DEFAULT_PORT}"
    if not sep:
        return f"{address}:{DEFAULT_PORT}"
    if ":" in host and not host.startswith("["):
        return f"[{address}]:{DEFAULT_PORT}"  # a bare IPv6 address
    if not port.isdigit() or not host:
        raise PermanentError(f"{what} {address!r} is not HOST:PORT (for example "
                             f"127.0.0.1:{DEFAULT_PORT})")
    return address


def collector_address(flag: str | None) -> tuple[str, str]:
    """The address and where it came from (``--collector``, ``MLTRAIL_COLLECTOR``, local)."""
    if flag:
        return with_port(flag, "--collector"), "--collector"
    env = os.environ.get("MLTRAIL_COLLECTOR")
    if env:
        return with_port(env, "MLTRAIL_COLLECTOR"), "MLTRAIL_COLLECTOR"
    from mltrail.pipeline.embedded import ensure_local_collector

    address, started = ensure_local_collector()
    if started:
        print(f"mltrail: started the local collector at {address}; "
              f"`{program()} local stop` stops it", file=sys.stderr)
    return address, LOCAL


def connect(flag: str | None, timeout: float = 10.0,
            security: ClientSecurity | None = None) -> QueryClient:
    """A client of the collector ``flag`` names, else the one the SDK would use (the
    local services started if need be); ``security`` None: from the environment."""
    address, source = collector_address(flag)
    return QueryClient(address, timeout=timeout, source=source, security=security)


def program() -> str:
    """How to type ``mltrail`` in the user's shell, for hints."""
    found = shutil.which("mltrail")
    mine = _my_script()
    if found and (mine is None or _same_file(found, mine)):
        return "mltrail"
    if mine is not None:
        return shlex.quote(str(mine))
    return f"{shlex.quote(sys.executable)} -m mltrail"


def _my_script() -> Path | None:
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "mltrail" and argv0.exists():
        return argv0.absolute()
    beside = Path(sys.executable).parent / "mltrail"  # python -m mltrail in a venv
    return beside.absolute() if beside.exists() else None


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def collector_flag(address: str) -> str:
    """`` --collector ADDRESS`` when a command without it would ask another collector."""
    env = os.environ.get("MLTRAIL_COLLECTOR")
    if env:
        return "" if env == address else f" --collector {address}"
    from mltrail.pipeline.embedded import embedded_dir, read_ready

    local = read_ready(embedded_dir() / "collector.json") or {}
    return "" if local.get("grpc") == address else f" --collector {address}"
