"""A Docker engine and a test image for the container-log tests, without a registry.

``ensure_engine()`` answers whether an engine is reachable; when none is and
``dockerd`` is installed and we are root, it starts one (its own log in a
temp file, no bridge network: test containers use ``--network none`` or
``host``) and stops it at exit: only an engine it started. ``ensure_image()``
builds ``mltrail-test-busybox:1`` with ``docker import`` from a root file
system holding Debian's static busybox (package ``busybox-static``), since no
registry is reachable. ``.ci/run`` installs ``docker.io`` and
``busybox-static``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from typing import Any

IMAGE = "mltrail-test-busybox:1"
SOCKET = "/var/run/docker.sock"
APPLETS = ("sh", "echo", "printf", "sleep", "seq", "cat", "head", "tr", "yes", "true")

_started: subprocess.Popen[bytes] | None = None


def client(timeout: int = 30) -> Any:
    import docker

    return docker.from_env(timeout=timeout)


def engine_reachable(path: str = SOCKET) -> bool:
    """GET /_ping on the engine's socket (plain socket: a half-started engine makes
    the SDK's client fail in its constructor, leaving its socket open)."""
    probe = socket.socket(socket.AF_UNIX)
    probe.settimeout(5)
    try:
        probe.connect(path)
        probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = probe.recv(4096)
    except OSError:
        return False
    finally:
        probe.close()
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]


def ensure_engine(timeout: float = 60.0) -> bool:
    """True when an engine answers, starting ``dockerd`` if this process may."""
    global _started
    if engine_reachable():
        return True
    dockerd = shutil.which("dockerd")
    if _started is not None or dockerd is None or os.geteuid() != 0:
        return False
    if _listening(SOCKET):
        return False  # someone else's engine is there, just not answering
    log_path = os.path.join(tempfile.gettempdir(), f"mltrail-dockerd-{os.getpid()}.log")
    with open(log_path, "ab") as log:
        _started = subprocess.Popen(
            [dockerd, "--host", f"unix://{SOCKET}", "--bridge=none", "--iptables=false",
             "--ip6tables=false"], stdout=log, stderr=subprocess.STDOUT)
    atexit.register(stop_engine)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _started.poll() is not None:
            return False
        if engine_reachable():
            return True
        time.sleep(0.25)
    return False


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def stop_engine() -> None:
    """Stop the engine this module started (never another one)."""
    global _started
    proc, _started = _started, None
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def ensure_image() -> str:
    """The test image, built once from busybox-static with ``docker import``."""
    with contextlib.closing(client()) as docker:
        with contextlib.suppress(Exception):
            docker.images.get(IMAGE)
            return IMAGE
        _import_image(docker)
    return IMAGE


def _import_image(docker: Any) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    repository, tag = IMAGE.split(":")
    docker.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)
