"""``mltrail health [ADDRESS]``: ask an agent or a collector whether it is ready (or alive).

For exec probes (Docker HEALTHCHECK, Kubernetes) and scripts: exit 0 when the
answer is SERVING, 1 otherwise, with one line saying what was asked and what
came back. ADDRESS is

- ``HOST:PORT``: a collector's gRPC port (``grpc.health.v1``);
- ``unix:PATH`` or a path: an agent's socket (``grpc.health.v1``);
- ``http://HOST:PORT``: ``/readyz`` (``/healthz`` for liveness), whose body
  says why a service is not ready; ``https://`` checks the certificate against
  ``$MLTRAIL_TLS_CA`` (else the system's roots).

Without ADDRESS, the service this container runs: the ready file named by
``$MLTRAIL_READY_FILE``, which ``mltrail agent`` and ``mltrail collector``
write once they listen (the image sets it). A collector serving TLS is asked
on its HTTPS port over loopback without checking its certificate: the probe
sends no credentials and only reads a status, and a certificate made for the
service's public name need not name 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mltrail.common.errors import MltrailError

READY_FILE_ENV = "MLTRAIL_READY_FILE"
_LISTEN_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "[::1]", "": "127.0.0.1"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "health", help="ask an agent or collector if it is ready (exit 0) or not (exit 1)",
        description="Ask an agent or a collector for its readiness or liveness.")
    p.add_argument("address", nargs="?",
                   help="collector HOST:PORT, agent unix:PATH, or http://HOST:PORT "
                        f"(default: the service named by ${READY_FILE_ENV})")
    p.add_argument("--liveness", action="store_true",
                   help="ask whether it is alive (a restart would help if not) instead of ready")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    p.set_defaults(func=run_health)


def run_health(args: argparse.Namespace) -> int:
    address, local = (args.address, False) if args.address else address_from_ready_file()
    service = "liveness" if args.liveness else "readiness"
    if address.startswith(("http://", "https://")):
        ok, answer = _ask_http(address, args.liveness, args.timeout, local)
    else:
        ok, answer = _ask_grpc(_grpc_target(address), service, args.timeout)
    print(f"{address} {service}: {answer}")
    return 0 if ok else 1


def address_from_ready_file() -> tuple[str, bool]:
    """The address of the service that wrote the ready file, and whether it is that
    container's own TLS port (asked without checking the certificate)."""
    path = os.environ.get(READY_FILE_ENV)
    if not path:
        raise MltrailError("no ADDRESS given and $MLTRAIL_READY_FILE is not set; pass the "
                           "collector's HOST:PORT or the agent's unix:PATH")
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MltrailError(f"no mltrail agent or collector has started here yet ({path} does "
                           "not exist); pass an ADDRESS to ask another one") from None
    except (OSError, ValueError) as exc:
        raise MltrailError(f"cannot read the ready file {path} ({exc})") from None
    if info.get("socket"):
        return f"unix:{info['socket']}", False
    if info.get("tls") and info.get("http"):
        host, _, port = str(info["http"]).rpartition(":")
        return f"https://{_LISTEN_ANY.get(host, host)}:{port}", True
    if info.get("grpc"):
        host, _, port = str(info["grpc"]).rpartition(":")
        return f"{_LISTEN_ANY.get(host, host)}:{port}", False
    raise MltrailError(f"the ready file {path} names no gRPC address or socket")


def _grpc_target(address: str) -> str:
    if address.startswith("unix:"):
        return address
    if address.startswith("/") or address.endswith(".sock"):
        return f"unix:{os.path.abspath(address)}"
    return address


def _ask_grpc(target: str, service: str, timeout: float) -> tuple[bool, str]:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                               wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return False, f"no health status for {service!r} (not an mltrail service?)"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return False, "does not serve grpc.health.v1 (not an mltrail service?)"
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return False, f"cannot reach it ({code.name if code else 'error'}: {detail})"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, name


def _ask_http(address: str, liveness: bool, timeout: float, local: bool = False
              ) -> tuple[bool, str]:
    url = address.rstrip("/")
    if not url.endswith(("/healthz", "/readyz")):
        url += "/healthz" if liveness else "/readyz"
    context = None
    if url.startswith("https://"):
        cafile = os.environ.get("MLTRAIL_TLS_CA") or None
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            return False, f"cannot use the CA in $MLTRAIL_TLS_CA ({cafile}: {exc})"
        if local:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return True, f"{response.status} {response.read().decode(errors='replace').strip()}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read().decode(errors='replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"cannot reach {url} ({reason})"
