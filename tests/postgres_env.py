"""A real PostgreSQL 15 server for the tests, started and stopped by the tests.

Debian's server binaries (``postgresql-15``, installed by ``.ci/run``) refuse
to run as root, so ``initdb`` and ``pg_ctl`` run as the ``postgres`` user
(``runuser -u postgres --``) on a data directory in a temporary directory that
user owns, listening on a free loopback port with trust authentication (only
127.0.0.1, only for the tests). Each test gets its own database
(``new_database``), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(os.environ.get("MLTRAIL_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "postgres"


def available() -> bool:
    """The server binaries and the user to run them as are present (and we may switch)."""
    if not (BIN / "pg_ctl").exists() or shutil.which("runuser") is None:
        return False
    try:
        import pwd

        pwd.getpwnam(USER)
    except KeyError:
        return False
    return os.geteuid() == 0 or _current_user() == USER


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    prefix = [] if _current_user() == USER else ["runuser", "-u", USER, "--"]
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout,
                          check=False)


@dataclass
class PostgresServer:
    """One cluster: ``start``, ``stop``, ``restart`` (fast shutdown), ``kill`` (immediate)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mltrail-pg-")))
    port: int = field(default_factory=free_port)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def init(self) -> PostgresServer:
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, USER, USER)
        done = _as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-U", USER,
                            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "max_connections = 200\nfsync = on\nshared_buffers = 64MB\n")
        return self

    def start(self) -> PostgresServer:
        done = _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                            "-l", str(self.root / "server.log"), "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n"
                               f"{self.log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        """A fast shutdown (every connection is cut) and a start on the same port."""
        self.stop("fast")
        self.start()

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its store URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
