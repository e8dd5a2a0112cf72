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

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from docpipe_dagster_tests.deploy import containers
from docpipe_dagster_tests.deploy.stack import Stack, document, launch_stack
from docpipe_dagster_tests.support.dev_stack import graphql, wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

PROJECT = "docpipe-ctest"
DOCS_PER_PATH = int(os.environ.get("DOCPIPE_CONTAINERS_DOCS", "12"))
BATCH_MAX_FILES = 8
MOCK_LATENCY_MS = 100


def _save_figures(stack: Stack) -> None:
    path = containers.CACHE / "figures.json"
    path.write_text(json.dumps(stack.figures, indent=2))
    print(json.dumps(stack.figures, indent=2))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = containers.engine_env()
    images = containers.ensure_images(env)
    work = tmp_path_factory.mktemp("containers")
    settings = {
        "DOCPIPE_MOCK_LATENCY_MS": str(MOCK_LATENCY_MS),
        "DOCPIPE_BATCH_MAX_FILES": str(BATCH_MAX_FILES),
    }
    with launch_stack(env, images, work, PROJECT, settings) as stack:
        stack.figures.update(
            images_built_s={k: round(v, 1) for k, v in images.built_s.items()},
            image_mb={
                "docpipe": round(containers.image_size_mb(env, images.docpipe)),
                "postgres": round(containers.image_size_mb(env, images.postgres)),
            },
            start_to_healthy_s=round(stack.ready[-1][1], 1),
        )
        yield stack
        _save_figures(stack)


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

    # Right after `up`, podman's DNS may not yet answer for a recreated container's name;
    # that is the engine settling, not what this test is about.
    def verify_once_postgres_resolves() -> subprocess.CompletedProcess | None:
        result = stack.docpipe("verify")
        return None if "failed to resolve host" in result.stderr else result

    verify = wait_for(verify_once_postgres_resolves, 90, "the name postgres to resolve", 3)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    with stack.http() as client:
        found = client.get("/v1/search", params={"q": "zephyr0000", "k": 3}).json()
    assert found["results"], found
