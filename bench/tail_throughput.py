"""File tail throughput: a file of 100-byte lines -> agent -> collector.

    python bench/tail_throughput.py [--mib 256] [--line-bytes 100] [--fsync interval]

Writes a file of ``--mib`` MiB of lines, starts a collector and an agent
(SQLite in a temp dir) tailing its name, renames the whole file into place
and reports, from that moment:
- lines/s and MiB/s read by the tail into the spool (the source's bytes_read
  reaching the file's size);
- lines/s and MiB/s end to end: until the collector acknowledged every
  record (spool pending bytes at 0 after the last read);
- the agent's and the collector's CPU seconds, and the agent's per MiB;
- in the same run, a bare read-and-send of the same file over a unix
  socket to a process that discards it: the ceiling of the machine.
Target: >= 100 MiB/s of 100-byte lines from one file.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_client import agent_service
from tests.procs import Service, collector_service

MIB = 1 << 20
SINK = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
n = 0
while True:
    data = s.recv(1 << 20)
    if not data:
        break
    n += len(data)
print(n)
"""


def write_lines(path: Path, mib: int, line_bytes: int) -> tuple[int, int]:
    block_lines = MIB // line_bytes
    head_room = line_bytes - 1
    with open(path, "wb") as fh:
        n = 0
        for _ in range(mib):
            fh.write(b"".join(
                (b"%012d " % (n + i)).ljust(head_room, b"x") + b"\n" for i in range(block_lines)))
            n += block_lines
    return n, path.stat().st_size


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(http: str) -> dict[str, float]:
    with urlopen(f"http://{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] = out.get(name.split("{")[0], 0.0) + float(value)
    return out


def bare_send(path: Path, workdir: Path) -> float:
    """Seconds to read the file in 1 MiB reads and send it over a unix socket."""
    address = str(workdir / "bare.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen(1)
    sink = subprocess.Popen([sys.executable, "-c", SINK, address], stdout=subprocess.PIPE)
    conn, _ = server.accept()
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while data := fh.read(MIB):
            conn.sendall(data)
    conn.close()
    received = int(sink.communicate(timeout=120)[0])
    elapsed = time.perf_counter() - started
    server.close()
    assert received == path.stat().st_size
    return elapsed


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mltrail-tail-bench-") as tmp:
        work = Path(tmp)
        log = work / "train.log"
        prepared = work / "prepared.log"
        lines, size = write_lines(prepared, args.mib, args.line_bytes)
        bare = bare_send(prepared, work)
        collector = collector_service(work).start()
        agent = agent_service(work, collector.grpc, "--source", f"file:{log}=bench-run:train")
        agent.args += ["--config", str(_config(work, args.fsync))]
        try:
            agent.start()
            _measure(agent, collector, (prepared, log), lines, size, bare, args)
        finally:
            agent.stop()
            collector.stop()


def _config(work: Path, fsync: str) -> Path:
    path = work / "agent.toml"
    path.write_text(f'fsync = "{fsync}"\n')
    return path


def _measure(agent: Service, collector: Service, move: tuple[Path, Path], lines: int,
             size: int, bare: float, args: argparse.Namespace) -> None:
    """From the moment the whole file appears under the tailed name (a rename)."""
    assert collector.proc is not None and agent.proc is not None
    collector_cpu0 = cpu_seconds(collector.proc.pid)
    agent_cpu0 = cpu_seconds(agent.proc.pid)
    started = time.perf_counter()
    os.rename(*move)
    read_done = None
    while True:
        m = metrics(agent.info["http"])
        now = time.perf_counter()
        if read_done is None and m.get("mltrail_agent_source_bytes_read_total", 0) >= size:
            read_done = now
        if read_done is not None and m.get("mltrail_agent_spool_pending_bytes", 1) == 0:
            break
        if now - started > 600:
            raise SystemExit("not done in 600 s")
        time.sleep(0.05)
    end_to_end = now - started
    agent_cpu = cpu_seconds(agent.proc.pid) - agent_cpu0
    collector_cpu = cpu_seconds(collector.proc.pid) - collector_cpu0
    mib = size / MIB
    assert read_done is not None
    print(f"file: {mib:.0f} MiB, {lines:,} lines of {args.line_bytes} bytes; "
          f"agent fsync={args.fsync}")
    print(f"tail -> spool:        {lines / (read_done - started):>12,.0f} lines/s "
          f"{mib / (read_done - started):8.1f} MiB/s")
    print(f"tail -> collector:    {lines / end_to_end:>12,.0f} lines/s "
          f"{mib / end_to_end:8.1f} MiB/s")
    print(f"bare read+send:       {lines / bare:>12,.0f} lines/s {mib / bare:8.1f} MiB/s "
          "(1 MiB reads over a unix socket to a discarding process)")
    print(f"agent CPU: {agent_cpu:.2f} s ({agent_cpu / mib * 1000:.1f} ms per MiB); "
          f"collector CPU: {collector_cpu:.2f} s ({collector_cpu / mib * 1000:.1f} ms per MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--line-bytes", type=int, default=100)
    parser.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    run(parser.parse_args())


if __name__ == "__main__":
    main()
