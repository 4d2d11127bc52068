"""BundleWriter: manifest, caps, middle cuts, redaction in every file."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from mltrail.common.bundle_writer import BundleWriter, read_bundle
from mltrail.common.redact import Redactor


def write(max_bytes: int = 1 << 20, max_file_bytes: int = 1 << 19, **files: object) -> bytes:
    out = io.BytesIO()
    writer = BundleWriter(out, "run", Redactor(), max_bytes=max_bytes,
                          max_file_bytes=max_file_bytes)
    for name, value in files.items():
        if isinstance(value, bytes):
            writer.add_bytes(name, value)
        elif isinstance(value, str):
            writer.add_text(name, value)
        else:
            writer.add_json(name, value)
    writer.close()
    return out.getvalue()


def test_manifest_lists_every_file_with_size_and_sha256() -> None:
    data = write(a_txt="hello\n", b_json={"x": 1}, c_bin=b"\x00\x01")
    archive, manifest = read_bundle(data)
    assert manifest["bundle"] == "run" and manifest["cuts"] == []
    names = {f["name"] for f in manifest["files"]}
    assert names == {"a_txt", "b_json", "c_bin", "README.txt"}
    for entry in manifest["files"]:
        body = archive.read(entry["name"])
        assert entry["size"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_long_text_loses_its_middle_at_line_boundaries() -> None:
    text = "".join(f"line {i}\n" for i in range(100_000))
    data = write(max_file_bytes=100_000, log=text)
    archive, manifest = read_bundle(data)
    kept = archive.read("log").decode()
    lines = kept.splitlines()
    assert lines[0] == "line 0" and lines[-1] == "line 99999"
    marker = [line for line in lines if line.startswith("[mltrail bundle:")]
    assert len(marker) == 1
    body = [line for line in lines if line and not line.startswith("[mltrail bundle:")]
    assert all(line.startswith("line ") for line in body)  # no line cut in half
    (cut,) = manifest["cuts"]
    assert cut["file"] == "log" and cut["action"] == "middle cut"
    assert cut["original_lines"] == 100_000
    assert cut["cut_lines"] + len(body) == 100_000
    assert len(kept.encode()) <= 100_000


def test_the_total_cap_holds_with_incompressible_data() -> None:
    cap = 300_000
    files = {f"blob{i}": os.urandom(90_000) for i in range(6)}
    files["log"] = "".join(f"{os.urandom(20).hex()}\n" for _ in range(20_000))  # type: ignore
    data = write(max_bytes=cap, max_file_bytes=cap, **files)  # type: ignore[arg-type]
    assert len(data) <= cap
    _, manifest = read_bundle(data)
    left_out = {c["file"] for c in manifest["cuts"] if c["action"] == "left out"}
    assert left_out  # some blobs did not fit, and the manifest says so
    assert "log" in {c["file"] for c in manifest["cuts"]}


def test_secrets_are_redacted_and_counted_per_file() -> None:
    data = write(log="ok\npassword=hunter2\n", cfg={"token": "t0k"})
    archive, manifest = read_bundle(data)
    assert b"hunter2" not in archive.read("log") and b"t0k" not in archive.read("cfg")
    assert manifest["redactions"]["total"] == 2
    assert manifest["redactions"]["by_file"] == {"cfg": {"secret_name": 1},
                                                 "log": {"assignment": 1}}


def test_a_key_split_across_pieces_is_redacted_whole() -> None:
    out = io.BytesIO()
    writer = BundleWriter(out, "run", Redactor())
    with writer.text_file("log") as log:
        log.write("x" * (300 * 1024) + "\n-----BEGIN PRIVATE KEY-----\nSECRETLINE1\n")
        log.write("y" * (300 * 1024) + "\nSECRETLINE2\n-----END PRIVATE KEY-----\nafter\n")
    writer.close()
    archive, _ = read_bundle(out.getvalue())
    body = archive.read("log")
    assert b"SECRETLINE" not in body and b"after" in body


def test_a_tiny_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        BundleWriter(io.BytesIO(), "run", Redactor(), max_bytes=1000)


def test_names_are_unique() -> None:
    out = io.BytesIO()
    writer = BundleWriter(out, "run", Redactor())
    writer.add_text("a.txt", "1")
    writer.add_text("a.txt", "2")
    writer.close()
    _, manifest = read_bundle(out.getvalue())
    assert [f["name"] for f in manifest["files"]][:2] == ["a.txt", "a-2.txt"]
    assert json.dumps(manifest)


def test_keys_across_the_cut_points_are_redacted_whole() -> None:
    def key(tag: str) -> str:
        return ("-----BEGIN PRIVATE KEY-----\n"
                + "".join(f"{tag}{i:04d}AAAAAAAAAAAAAAAAAAAA\n" for i in range(100))
                + "-----END PRIVATE KEY-----\n")

    filler = "".join(f"line {i}\n" for i in range(3500))  # ~33 KB: the head ends in the key
    middle = "".join(f"middle {i}\n" for i in range(30_000))
    # ~70 KB after the second key: the tail (~72 KB) starts inside it
    tail_filler = "".join(f"tail {i:05d}\n" for i in range(6_180))
    text = filler[:28_000] + key("SECRETHEAD") + middle + key("SECRETTAIL") + tail_filler
    data = write(max_file_bytes=100_000, log=text)
    archive, manifest = read_bundle(data)
    body = archive.read("log")
    assert b"SECRETHEAD" not in body and b"SECRETTAIL" not in body
    assert body.startswith(b"line 0\n") and body.endswith(b"tail 06179\n")
    assert len(body) <= 100_000 and manifest["cuts"][0]["action"] == "middle cut"
