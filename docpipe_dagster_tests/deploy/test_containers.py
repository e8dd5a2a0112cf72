"""The compose stack, run for real on a container engine (podman, rootful, no registry).

Builds the base image (Debian packages), the docpipe image (deploy/Dockerfile, from the wheel,
dependencies from a host-built wheelhouse) and a Postgres 18 + pgvector image, then brings up
deploy/docker-compose.yml (+ docker-compose.local.yml for the local images) and checks, in
order on one stack: the images run as non-root and their history holds no secret; every
healthcheck passes in depends_on order and the UI and the API answer on loopback; documents
uploaded through the API and put into storage through the storage mock end completed and are
found by search, each batch run in a container of its own launched by the daemon's
DockerRunLauncher (through `podman system service`); a run container killed mid-batch ends in
its batch re-run and `docpipe verify` passing; a killed code server is restarted by its
restart policy and the sensors resume; `down` then `up` loses and duplicates nothing.
Figures (build and start times, image size, memory, throughput) are printed and written to
~/.cache/docpipe-containers/figures.json. DOCPIPE_CONTAINERS_DOCS sets the documents per path.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from docpipe_dagster.local.ports import named_free_ports
from docpipe_dagster_tests.deploy import containers
from docpipe_dagster_tests.deploy.containers import Compose, EngineSocket, Images
from docpipe_dagster_tests.support.dev_stack import graphql, wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

PROJECT = "docpipe-ctest"
DOCS_PER_PATH = int(os.environ.get("DOCPIPE_CONTAINERS_DOCS", "12"))
BATCH_MAX_FILES = 8
MOCK_LATENCY_MS = 100
RUNS = """{ runsOrError { ... on Runs { results { runId status startTime endTime
            tags { key value } } } } }"""


@dataclass
class Stack:
    compose: Compose
    images: Images
    ui: str
    api: str
    api_key: str
    secret_values: list[str]
    ready: list[tuple[str, float]]
    figures: dict[str, Any] = field(default_factory=dict)

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30
        )

    def sql(self, query: str) -> list[list[str]]:
        out = self.compose.podman(
            "exec",
            self.compose.container("postgres"),
            "psql",
            "-U",
            "docpipe",
            "-d",
            "docpipe",
            "-tA",
            "-F",
            "\t",
            "-c",
            query,
        )
        return [line.split("\t") for line in out.splitlines() if line]

    def states(self) -> dict[str, int]:
        rows = self.sql("SELECT state, count(*) FROM upload_pipeline.upload_jobs GROUP BY state")
        return {state: int(n) for state, n in rows}

    def docpipe(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", "exec", self.compose.container("code-server"), "docpipe", *args],
            env=self.compose.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def runs(self) -> list[dict[str, Any]]:
        results = graphql(self.ui, RUNS)["runsOrError"]["results"]
        for run in results:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return [r for r in results if "dagster/partition" in r["tags"]]

    def run_errors(self, run_id: str) -> list[str]:
        """What Dagster recorded as going wrong in a run (for failure messages)."""
        query = (
            '{ runOrError(runId: "' + run_id + '") { ... on Run { tags { key value } '
            "eventConnection { events { __typename ... on MessageEvent { message level } "
            "... on ExecutionStepFailureEvent { error { message } } "
            "... on RunFailureEvent { error { message } } } } } } }"
        )
        run = graphql(self.ui, query)["runOrError"]
        tags = {t["key"]: t["value"] for t in run["tags"]}
        return [f"partition {tags.get('dagster/partition')}"] + [
            f"{e['__typename']}: {e.get('message', '')[:300]} "
            f"{((e.get('error') or {}).get('message') or '')[:1500]}"
            for e in run["eventConnection"]["events"]
            if e.get("level") in ("ERROR", "CRITICAL") or "Failure" in e["__typename"]
        ]

    def settled_runs(self, timeout_s: float) -> list[dict[str, Any]]:
        """The batch runs once none is queued, starting or running."""
        busy = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
        return wait_for(
            lambda: (runs := self.runs()) and not {r["status"] for r in runs} & busy and runs,
            timeout_s,
            "every batch run to finish",
            2,
        )

    def failures(self, runs: list[dict[str, Any]]) -> dict[str, list[str]]:
        return {r["runId"]: self.run_errors(r["runId"]) for r in runs if r["status"] != "SUCCESS"}

    def upload(self, key: str, data: bytes) -> None:
        with self.http() as client:
            response = client.post("/v1/documents", files={"file": (key, data)})
        assert response.status_code == 202, response.text

    def put_in_storage(self, docs: list[tuple[str, bytes]]) -> None:
        """Through the storage mock's own API (Supabase Storage), from inside the network,
        in one process; a name lookup that fails (aardvark-dns hiccups under load) is retried."""
        script = """
import base64, json, os, sys, time, httpx
headers = {"Authorization": "Bearer " + os.environ["SUPABASE_SERVICE_KEY"]}
for key, data in json.load(sys.stdin).items():
    url = "http://storage-mock:8000/storage/v1/object/documents/" + key
    for attempt in range(10):
        try:
            r = httpx.post(url, content=base64.b64decode(data), headers=headers, timeout=30)
            break
        except httpx.ConnectError:
            time.sleep(1)
    else:
        sys.exit("storage-mock unreachable")
    if not r.is_success:
        sys.exit(r.text)
"""
        payload = json.dumps({key: base64.b64encode(data).decode() for key, data in docs})
        done = subprocess.run(
            ["podman", "exec", "-i", self.compose.container("api"), "python", "-c", script],
            input=payload.encode(),
            env=self.compose.env,
            capture_output=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    def wait_completed(self, total: int, timeout_s: float) -> float:
        started = time.monotonic()

        def done() -> bool:
            states = self.states()
            assert not states.get("failed"), self.sql(
                "SELECT storage_key, failure_reason FROM upload_pipeline.upload_jobs "
                "WHERE state = 'failed'"
            )
            return states.get("completed", 0) >= total

        wait_for(done, timeout_s, f"{total} documents completed (now {self.states()})", 2)
        return time.monotonic() - started

    def memory_mb(self) -> float:
        out = self.compose.podman("stats", "--no-stream", "--format", "json")
        total = 0.0
        for row in json.loads(out):
            used = row.get("mem_usage") or row.get("MemUsage", "0B / 0B")
            total += _bytes(used.split("/")[0].strip())
        return total / 1e6


def _bytes(text: str) -> float:
    number, unit = re.match(r"([\d.]+)\s*([kKMGT]?i?B)", text).groups()
    scale = {
        "B": 1,
        "kB": 1e3,
        "KB": 1e3,
        "MB": 1e6,
        "GB": 1e9,
        "KiB": 1024,
        "MiB": 2**20,
        "GiB": 2**30,
        "TB": 1e12,
    }
    return float(number) * scale[unit]


def document(n: int, word: str) -> tuple[str, bytes]:
    """A small HTML page (so it goes through the parser mock) with a unique word."""
    body = " ".join(
        f"<p>Section {i} of document {n} about {word} and vector search.</p>" for i in range(12)
    )
    return f"doc-{word}.html", f"<html><body><h1>{word}</h1>{body}</body></html>".encode()


def _save_figures(stack: Stack) -> None:
    path = containers.CACHE / "figures.json"
    path.write_text(json.dumps(stack.figures, indent=2))
    print(json.dumps(stack.figures, indent=2))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = containers.engine_env()
    images = containers.ensure_images(env)
    work = tmp_path_factory.mktemp("containers")
    socket = EngineSocket(env, work / "engine")
    ports = named_free_ports(["ui", "api"])
    values = {
        name: secrets.token_hex(12) for name in ("POSTGRES_PASSWORD", "DOCPIPE_API_KEY", "MOCK")
    }
    env_file = work / "stack.env"
    env_file.write_text(
        "".join(
            f"{name}={value}\n"
            for name, value in {
                "POSTGRES_PASSWORD": values["POSTGRES_PASSWORD"],
                "DOCPIPE_API_KEY": values["DOCPIPE_API_KEY"],
                "DOCPIPE_MOCK_API_KEY": values["MOCK"],
                "LLAMA_CLOUD_API_KEY": values["MOCK"],
                "OPENAI_API_KEY": values["MOCK"],
                "SUPABASE_SERVICE_KEY": values["MOCK"],
                "DOCPIPE_MOCK_LATENCY_MS": str(MOCK_LATENCY_MS),
                "DOCPIPE_BATCH_MAX_FILES": str(BATCH_MAX_FILES),
            }.items()
        )
    )
    compose_env = {
        **env,
        "DOCPIPE_IMAGE": images.docpipe,
        "DOCPIPE_POSTGRES_IMAGE": images.postgres,
        "DOCPIPE_ENV_FILE": str(env_file),
        "DOCKER_SOCKET": str(socket.path),
        "DOCKER_GID": "0",
        "DAGSTER_WEBSERVER_PORT": str(ports["ui"]),
        "DOCPIPE_API_HOST_PORT": str(ports["api"]),
        "POSTGRES_PASSWORD": values["POSTGRES_PASSWORD"],
        "DOCPIPE_API_KEY": values["DOCPIPE_API_KEY"],
    }
    compose = Compose(compose_env, PROJECT)
    _remove_run_containers(compose)
    compose.down_with_volumes()  # a stack a crashed earlier run left behind
    try:
        ready = compose.up()
        stack = Stack(
            compose,
            images,
            f"http://127.0.0.1:{ports['ui']}",
            f"http://127.0.0.1:{ports['api']}",
            values["DOCPIPE_API_KEY"],
            list(values.values()),
            ready,
        )
        stack.figures.update(
            images_built_s={k: round(v, 1) for k, v in images.built_s.items()},
            image_mb={
                "docpipe": round(containers.image_size_mb(env, images.docpipe)),
                "postgres": round(containers.image_size_mb(env, images.postgres)),
            },
            start_to_healthy_s=round(ready[-1][1], 1),
        )
        yield stack
        _save_figures(stack)
    finally:
        for service in ("migrate", "code-server", "daemon"):
            print(f"--- {service}\n{compose.logs(service, 30)}")
        if not os.environ.get("DOCPIPE_CONTAINERS_KEEP"):  # keep: to look at the stack by hand
            _remove_run_containers(compose)
            compose.down_with_volumes()
            socket.stop()


def _remove_run_containers(compose: Compose) -> None:
    ids = compose.podman("ps", "-aq", "--filter", "label=dagster/run_id").split()
    if ids:
        compose.podman("rm", "-f", "-t", "0", *ids, check=False)


def test_images_run_as_non_root_and_their_history_holds_no_secret(stack: Stack) -> None:
    env = stack.compose.env
    assert containers.podman(env, "run", "--rm", stack.images.docpipe, "id", "-u") == "10001"
    assert (
        containers.podman(
            env, "image", "inspect", "--format", "{{.Config.User}}", stack.images.docpipe
        )
        == "docpipe"
    )
    for image in (stack.images.docpipe, stack.images.postgres):
        history = containers.podman(
            env, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image
        )
        config = containers.podman(env, "image", "inspect", image)
        for value in stack.secret_values:
            assert value not in history and value not in config, image
        assert not re.search(r"(KEY|PASSWORD|SECRET|TOKEN)=\S", history), image
    # the running services too: the API and the daemon run as the image's user
    for service in ("api", "daemon", "code-server"):
        uid = stack.compose.podman("exec", stack.compose.container(service), "id", "-u")
        assert uid == "10001", service


def test_services_become_healthy_in_dependency_order(stack: Stack) -> None:
    ready_at = dict(stack.ready)
    assert set(ready_at) == set(stack.compose.services)
    for name, service in stack.compose.services.items():
        for dependency in service.get("depends_on", {}):
            assert ready_at[dependency] < ready_at[name], (name, dependency)
    assert httpx.get(f"{stack.ui}/server_info", timeout=10).is_success
    assert httpx.get(f"{stack.api}/health", timeout=10).is_success
    assert httpx.get(f"{stack.api}/v1/search", params={"q": "x"}, timeout=10).status_code == 401
    launcher = graphql(stack.ui, "{ instance { runLauncher { name } } }")
    assert launcher["instance"]["runLauncher"]["name"] == "DockerRunLauncher"


def test_documents_complete_and_each_batch_runs_in_its_own_container(stack: Stack) -> None:
    started = time.monotonic()
    words = [f"zephyr{n:04d}" for n in range(2 * DOCS_PER_PATH)]
    for n, word in enumerate(words[:DOCS_PER_PATH]):
        stack.upload(*document(n, word))
    stack.put_in_storage(
        [document(n, word) for n, word in enumerate(words[DOCS_PER_PATH:], DOCS_PER_PATH)]
    )
    stack.wait_completed(len(words), 300 + 2 * len(words))
    elapsed = time.monotonic() - started
    stack.figures["documents"] = len(words)
    stack.figures["documents_per_s"] = round(len(words) / elapsed, 2)
    stack.figures["stack_memory_mb"] = round(stack.memory_mb())

    with stack.http() as client:
        found = client.get("/v1/search", params={"q": words[-1], "k": 3}).json()
    assert any(words[-1] in json.dumps(hit) for hit in found["results"]), found

    runs = stack.settled_runs(180)
    assert len(runs) >= 2 * DOCS_PER_PATH // BATCH_MAX_FILES, runs
    assert not stack.failures(runs), stack.failures(runs)
    container_ids = [r["tags"].get("docker/container_id") for r in runs]
    assert all(container_ids) and len(set(container_ids)) == len(runs), container_ids
    assert {r["tags"].get("dagster/image") for r in runs} == {stack.images.docpipe}
    service_ids = set(
        stack.compose.podman(
            "ps", "-aq", "--no-trunc", "--filter", f"label=io.podman.compose.project={PROJECT}"
        ).split()
    )
    assert len(service_ids) == len(stack.compose.services)
    assert not service_ids & set(container_ids), "a run ran in a service's container"
    stack.figures["batch_runs"] = len(runs)


def test_killed_run_container_resumes_its_batch_and_verify_passes(stack: Stack) -> None:
    before = {r["runId"] for r in stack.runs()}
    total = sum(stack.states().values()) + BATCH_MAX_FILES
    for n in range(BATCH_MAX_FILES):
        stack.upload(*document(1000 + n, f"quasar{n:04d}"))

    def in_flight() -> dict[str, Any] | None:
        for run in stack.runs():
            if run["runId"] not in before and run["status"] == "STARTED":
                return run
        return None

    victim = wait_for(in_flight, 240, "a batch run in its container", 0.5)
    container_id = victim["tags"]["docker/container_id"]
    pid = int(stack.compose.podman("inspect", "--format", "{{.State.Pid}}", container_id))
    os.kill(pid, signal.SIGKILL)
    partition = victim["tags"]["dagster/partition"]

    def settled() -> bool:
        mine = [r for r in stack.runs() if r["tags"]["dagster/partition"] == partition]
        return any(r["status"] == "SUCCESS" for r in mine)

    wait_for(settled, 300, f"batch {partition} to complete after its container was killed", 2)
    stack.wait_completed(total, 180)
    mine = {
        r["runId"]: r["status"] for r in stack.runs() if r["tags"]["dagster/partition"] == partition
    }
    # the killed run failed (run monitoring saw its container gone) and a retry succeeded
    assert mine[victim["runId"]] == "FAILURE", mine
    verify = stack.docpipe("verify")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]


def test_killed_code_server_is_restarted_and_sensors_resume(stack: Stack) -> None:
    compose = stack.compose
    name = compose.container("code-server")
    pid = compose.state("code-server")["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: compose.state("code-server")["Pid"] not in (0, pid), 60, "the restart", 1)
    compose.wait_ready("code-server", 240)
    restarts = int(compose.podman("inspect", "--format", "{{.RestartCount}}", name))
    assert restarts >= 1
    total = sum(stack.states().values()) + 1
    stack.upload(*document(2000, "pulsar0001"))
    stack.wait_completed(total, 300)


def test_down_then_up_loses_and_duplicates_nothing(stack: Stack) -> None:
    snapshot = """SELECT (SELECT count(*) FROM upload_pipeline.upload_jobs),
        (SELECT count(DISTINCT (storage_key, content_sha256)) FROM upload_pipeline.upload_jobs),
        (SELECT count(*) FROM upload_pipeline.upload_jobs WHERE state = 'completed'),
        (SELECT count(*) FROM upload_pipeline.document_chunks)"""
    before = stack.sql(snapshot)
    assert before[0][0] == before[0][1], "duplicate jobs before the restart"
    stack.compose.down()
    stack.ready = stack.compose.up()
    stack.figures["restart_to_healthy_s"] = round(stack.ready[-1][1], 1)
    time.sleep(20)  # several intake ticks over the same storage
    after = stack.sql(snapshot)
    assert after == before
    verify = stack.docpipe("verify")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    with stack.http() as client:
        found = client.get("/v1/search", params={"q": "zephyr0000", "k": 3}).json()
    assert found["results"], found
