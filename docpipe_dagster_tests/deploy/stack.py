"""The compose stack on podman, started from the repository's files: for test_containers.py
and benchmarks/containers.py.

`launch_stack` writes the stack's env file (fresh random secrets, plus the settings given),
starts `podman system service` for the DockerRunLauncher and brings the services up in
depends_on order on free loopback ports; `Stack` is what the callers drive it with (uploads,
storage, SQL, Dagster's runs, memory).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from docpipe_dagster.local.ports import named_free_ports
from docpipe_dagster_tests.deploy.containers import Compose, EngineSocket, Images
from docpipe_dagster_tests.support.dev_stack import graphql, wait_for

# Five attempts of the API's storage client, 30 s each, fit inside this.
UPLOAD_TIMEOUT_S = 180.0
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
        """`docpipe <args>` in the code server's container. Retried (three attempts, 5 s
        apart) only when the container could not resolve a service's name: podman's network
        DNS answered nothing for a moment after a test killed a container."""
        for attempt in range(3):
            done = subprocess.run(
                ["podman", "exec", self.compose.container("code-server"), "docpipe", *args],
                env=self.compose.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode == 0 or "failed to resolve host" not in done.stderr:
                return done
            if attempt < 2:
                time.sleep(5)
        return done

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
        # The API answers once storage holds the file: under a loaded container engine its
        # storage client may retry a slow write (30 s an attempt) past the default timeout.
        with self.http() as client:
            response = client.post(
                "/v1/documents", files={"file": (key, data)}, timeout=UPLOAD_TIMEOUT_S
            )
        assert response.status_code == 202, response.text

    def put_in_storage(self, docs: list[tuple[str, bytes]]) -> None:
        """Through the storage mock's own API (Supabase Storage), from inside the network,
        in one process; a name lookup that fails (aardvark-dns hiccups under load) is retried."""
        script = """
import base64, json, os, sys, time, httpx
headers = {"Authorization": "Bearer " + os.environ["SUPABASE_SERVICE_KEY"]}
for key, data in json.load(sys.stdin).items():
    url = os.environ.get("STORAGE_URL", "http://storage-mock:8000") + "/storage/v1/object/documents/" + key
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


def remove_run_containers(compose: Compose) -> None:
    ids = compose.podman("ps", "-aq", "--filter", "label=dagster/run_id").split()
    if ids:
        compose.podman("rm", "-f", "-t", "0", *ids, check=False)


@contextlib.contextmanager
def launch_stack(
    env: dict[str, str],
    images: Images,
    work: Path,
    project: str,
    settings: dict[str, str],
) -> Iterator[Stack]:
    """The stack up and ready (settings: more lines for its env file); down, volumes and
    all, on exit unless DOCPIPE_CONTAINERS_KEEP is set (to look at it by hand)."""
    socket = EngineSocket(env, work / "engine")
    ports = named_free_ports(["ui", "api"])
    values = {
        name: secrets.token_hex(12) for name in ("POSTGRES_PASSWORD", "DOCPIPE_API_KEY", "MOCK")
    }
    lines = {
        "POSTGRES_PASSWORD": values["POSTGRES_PASSWORD"],
        "DOCPIPE_API_KEY": values["DOCPIPE_API_KEY"],
        "DOCPIPE_MOCK_API_KEY": values["MOCK"],
        "LLAMA_CLOUD_API_KEY": values["MOCK"],
        "OPENAI_API_KEY": values["MOCK"],
        "SUPABASE_SERVICE_KEY": values["MOCK"],
        **settings,
    }
    env_file = work / "stack.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in lines.items()))
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
    compose = Compose(compose_env, project)
    remove_run_containers(compose)
    compose.down_with_volumes()  # a stack a crashed earlier run left behind
    try:
        ready = compose.up()
        yield Stack(
            compose,
            images,
            f"http://127.0.0.1:{ports['ui']}",
            f"http://127.0.0.1:{ports['api']}",
            values["DOCPIPE_API_KEY"],
            list(values.values()),
            ready,
        )
    finally:
        for service in ("migrate", "code-server", "daemon", "api"):
            print(f"--- {service}\n{compose.logs(service, 30)}")
        if not os.environ.get("DOCPIPE_CONTAINERS_KEEP"):
            remove_run_containers(compose)
            compose.down_with_volumes()
            socket.stop()
