"""The mltrail image for the deployment tests, built on the real engine without a registry.

- ``ensure_base_image()``: ``mltrail-deploy-base:bookworm-1``, Debian bookworm
  (Python 3.11) made with ``mmdebstrap`` from Debian's mirror and loaded with
  ``docker import``; built once per engine, kept between runs.
- ``wheel_dir()``: the project's dependencies (and its build backend) as wheels,
  fetched once with ``pip download`` into a cache directory keyed by the
  dependency list, so the image build runs with ``--network none``.
- ``ensure_image()``: ``deploy/docker/Dockerfile`` built from a context holding
  the sources and those wheels, tagged by a hash of both (rebuilt only when
  the sources change).
- ``ensure_postgres_image()``: ``mltrail-deploy-postgres:15-<hash>``, Debian's
  postgresql-15 (mmdebstrap, ``docker import``) with ``tests/postgres_image``'s
  entrypoint, which takes the official postgres image's variables; built once per
  engine and entrypoint, kept between runs.
- ``compose_command()``: ``docker compose`` (v2) when present, else Debian's
  ``docker-compose`` 1.29; ``.ci/run`` installs one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "mltrail-deploy-base:bookworm-1"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
IMAGE_REPO = "mltrail-deploy-test"
SOURCES = ("pyproject.toml", "README.md", ".dockerignore", "sdk", "agent", "collector",
           "common", "proto", "deploy")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mltrail-deploy"
BUILD_DEPENDENCIES = ("setuptools>=77", "wheel")
IMAGE_EXTRAS = ("postgres",)  # what deploy/docker/Dockerfile installs beside mltrail


def docker(*args: str, timeout: float = 600, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def ensure_base_image() -> str:
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = debian_rootfs(Path(tmp), "base", BASE_PACKAGES)
        docker("import", str(rootfs), BASE_IMAGE)
    return BASE_IMAGE


def debian_rootfs(directory: Path, what: str, packages: str, *options: str) -> Path:
    """Debian bookworm (minbase and ``packages``) as a tarball in ``directory``."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise RuntimeError("mmdebstrap is missing (apt-get install mmdebstrap); it builds the "
                           f"{what} image from Debian's packages")
    rootfs = directory / "rootfs.tar"
    subprocess.run([mmdebstrap, "--variant=minbase", f"--include={packages}", *options,
                    "--quiet", "bookworm", str(rootfs)], check=True, timeout=900)
    return rootfs


POSTGRES_REPO = "mltrail-deploy-postgres"
POSTGRES_ENTRYPOINT = ROOT / "tests" / "postgres_image" / "docker-entrypoint.sh"
# Neither documentation nor translations in the image; the cluster Debian's package makes
# is removed (the entrypoint makes its own in PGDATA, as the official image does).
_LEAN = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")]


def ensure_postgres_image() -> str:
    """A PostgreSQL 15 image compatible with the official one, built offline."""
    script = POSTGRES_ENTRYPOINT.read_bytes()
    tag = f"{POSTGRES_REPO}:15-{hashlib.sha256(script).hexdigest()[:12]}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = debian_rootfs(Path(tmp), "PostgreSQL", "postgresql-15", *_LEAN,
                               "--customize-hook=rm -rf \"$1/var/lib/postgresql/15\" "
                               "\"$1/etc/postgresql/15\"")
        with tarfile.open(rootfs, "a") as tar:
            entry = tarfile.TarInfo("./usr/local/bin/docker-entrypoint.sh")
            entry.size, entry.mode = len(script), 0o755
            tar.addfile(entry, io.BytesIO(script))
        docker("import", "--change", "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:"
               "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "--change", "ENV PGDATA=/var/lib/postgresql/data",
               "--change", "VOLUME /var/lib/postgresql/data",
               "--change", "EXPOSE 5432",
               "--change", 'ENTRYPOINT ["docker-entrypoint.sh"]',
               "--change", 'CMD ["postgres"]', str(rootfs), tag)
    _remove_older(tag, POSTGRES_REPO)
    return tag


def _dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for e in IMAGE_EXTRAS for d in project["optional-dependencies"][e]]
    return [*project["dependencies"], *extras, *BUILD_DEPENDENCIES]


def wheel_dir() -> Path:
    """Wheels for the image's Python (3.11, manylinux x86_64), fetched once."""
    deps = _dependencies()
    key = hashlib.sha256("\n".join(deps).encode()).hexdigest()[:16]
    target = CACHE / f"wheels-{key}"
    if (target / ".complete").exists():
        return target
    partial = CACHE / f"wheels-{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(partial),
                    "--only-binary=:all:", "--python-version", "3.11",
                    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "any", *deps],
                   check=True, timeout=600)
    (partial / ".complete").write_text("\n".join(deps))
    if target.exists():
        shutil.rmtree(partial)  # another run finished first: keep its copy
    else:
        partial.rename(target)
    return target


def _context(directory: Path) -> str:
    """Copy the sources and wheels into ``directory``; the hash of what was copied."""
    digest = hashlib.sha256()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, directory / name)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    wheels = wheel_dir()
    shutil.copytree(wheels, directory / "wheels")
    digest.update(wheels.name.encode())
    return digest.hexdigest()[:12]


def ensure_image() -> str:
    """The project's image from deploy/docker/Dockerfile on the local base, offline."""
    base = ensure_base_image()
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        tag = f"{IMAGE_REPO}:{_context(context)}"
        if image_exists(tag):
            return tag
        docker("build", "--network", "none", "--file", "deploy/docker/Dockerfile",
               "--build-arg", f"BASE={base}",
               "--build-arg", "PIP_OPTIONS=--no-index --find-links=/src/wheels",
               "--label", "mltrail.test=deploy", "--tag", tag, str(context), timeout=900)
    _remove_older(tag, IMAGE_REPO)
    return tag


def _remove_older(keep: str, repository: str) -> None:
    """Drop images of earlier sources (not forced: one a container still uses stays)."""
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository,
                    check=False).stdout.split()
    for old in listed:
        if old != keep:
            docker("image", "rm", old, check=False)


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) when the plugin is there, else ``docker-compose`` (1.29)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None
