"""The vendored uPlot is byte for byte the file in its pinned npm tarball.

``npm pack`` fetches the tarball from the npm registry; its sha512 must be
the integrity pinned in VENDOR.json, and each vendored file must equal the
tarball's. No npm or no registry: skipped on a developer's machine, a
failure in CI (MLTRAIL_REQUIRE_ALL=1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import require

VENDOR = Path(__file__).resolve().parents[2] / "collector" / "web" / "static" / "vendor"


def test_vendored_files_match_the_pinned_npm_tarball(tmp_path: Path) -> None:
    pinned = json.loads((VENDOR / "VENDOR.json").read_text())
    npm = shutil.which("npm")
    require(npm is not None, "npm")
    assert npm is not None
    done = subprocess.run([npm, "pack", f"{pinned['package']}@{pinned['version']}", "--silent"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    require(done.returncode == 0, f"the npm registry ({done.stderr.strip()[:200]})")
    tarball = tmp_path / done.stdout.strip().splitlines()[-1]
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    assert f"sha512-{digest}" == pinned["integrity"]
    with tarfile.open(tarball) as archive:
        for name, entry in pinned["files"].items():
            member = archive.extractfile(entry["from"])
            assert member is not None, entry["from"]
            original = member.read()
            assert (VENDOR / name).read_bytes() == original, name
            assert hashlib.sha256(original).hexdigest() == entry["sha256"], name
