"""The fault matrix: one test per fault of the parser and the embedder.

Faults are injected into the real mocks over HTTP (`mock.set_faults`). Each test shows both
halves of the promise:
- a short fault is absorbed by the client's retries: the mock saw the extra requests and
  every document completed;
- a fault that outlasts the retries fails only the documents it hit, with a readable,
  retryable reason, while the rest of the batch completes; once the fault clears, the
  retry_sensor re-queues them and the retry run completes them.
After each, the invariants hold with nothing running, no chunk is stored twice, every
chunk has its vector, and `docpipe verify` passes.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from docpipe_dagster_tests.reliability.conftest import FAULT_CLIENT_ATTEMPTS, FaultRig

# A fault that makes the pipeline hang must fail the test, not stall the suite.
pytestmark = pytest.mark.timeout(60)

# The parser speaks LlamaParse v2 (the default); .txt files are parsed in-process.
UPLOAD = "/api/v2/parse/upload"
UPLOAD_ROUTE = "POST /api/v2/parse/upload"
EMBED_ROUTE = "POST /v1/embeddings"

DOCS = {
    "alpha.md": "# Alpha\n\nAlpine meadows bloom with gentians and edelweiss in early summer.\n",
    "beta.txt": "Beta testers reported that the kettle whistles before the water boils.",
    "notes/gamma.html": (
        "<html><body><h1>Gamma</h1><p>Gamma rays from the pulsar sweep past the "
        "radio telescope every few milliseconds.</p></body></html>"
    ),
}
TARGET = "target.md"
TARGET_TEXT = "# Target\n\nThe lighthouse keeper trims the wick before dusk every evening.\n"

SEED = "# Seed\n\nSeed potatoes are cut so that every piece keeps at least one eye.\n"
FIRST = "Sourdough starters are fed with rye flour and water at a one to one ratio."
SECOND = "Glacier crevasses hide under snow bridges; rope teams keep ten metres apart."


# --- parser ---------------------------------------------------------------------------------


def write_batch(rig: FaultRig) -> set[str]:
    for key, text in {**DOCS, TARGET: TARGET_TEXT}.items():
        rig.write(key, text)
    return {*DOCS, TARGET}


def remote(keys: set[str]) -> set[str]:
    """The documents that go to the parser (the rest are parsed locally)."""
    return {k for k in keys if not k.endswith(".txt")}


def assert_only_failed(
    rig: FaultRig, failed: set[str], stage: str, reason: str | re.Pattern[str]
) -> dict[str, dict[str, Any]]:
    """`failed` ended failed at `stage` (readable, retryable, retry due); the rest of the
    batch completed without a single failure; the invariants hold with nothing running."""
    jobs = rig.jobs()
    for key, job in jobs.items():
        if key in failed:
            assert job["state"] == "failed", (key, job["state"])
            assert (job["failed_stage"], job["retryable"], job["attempts"]) == (stage, True, 1)
            assert job["next_attempt_at"] is not None
            if isinstance(reason, str):
                assert reason in job["failure_reason"], job["failure_reason"]
            else:
                assert reason.search(job["failure_reason"]), job["failure_reason"]
        else:
            assert (job["state"], job["failure_reason"]) == ("completed", None), key
            assert rig.failed_event_count(key) == 0, key
    report = rig.invariants()
    assert report.ok, report.render()
    return jobs


def recover(rig: FaultRig, keys: set[str], resources: dict[str, Any] | None = None) -> None:
    """Clear the faults, let the retry_sensor re-queue what failed, run it: all complete."""
    rig.parser.clear_faults()
    rig.embedder.clear_faults()
    (retry,) = rig.retry_due(resources)
    assert retry.success and retry.batch_key.startswith("retry-")
    rig.assert_all_completed_and_consistent(keys)
    assert rig.retry_due(resources) == []  # nothing left to retry


def client_retry_delays(caplog: pytest.LogCaptureFixture, logger: str) -> list[float]:
    """The delays the client logged before each retry (its last format argument)."""
    return sorted(
        round(float(r.args[-1]), 3)
        for r in caplog.records
        if r.name == logger and isinstance(r.args, tuple) and "retry" in r.msg
    )


def test_parser_5xx(fault_rig: FaultRig) -> None:
    keys = write_batch(fault_rig)
    target_job = fault_rig.parse_job_path(TARGET)
    fault_rig.parser.set_faults(
        [
            {"kind": "http_500", "count": 2, "path": UPLOAD},  # absorbed by retries
            {"kind": "http_503", "path": target_job},  # outlasts them: one document
        ]
    )

    fault_rig.ingest()

    stats = fault_rig.parser.stats()
    assert stats["faults"] == {"http_500": 2, "http_503": FAULT_CLIENT_ATTEMPTS}
    assert stats["by_route"][UPLOAD_ROUTE] == len(remote(keys)) + 2
    assert_only_failed(fault_rig, {TARGET}, "parse", "HTTP 503: Service Unavailable")
    recover(fault_rig, keys)


def test_parser_429_honours_retry_after(
    fault_rig: FaultRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="docpipe_dagster.clients.llamaparse")
    keys = write_batch(fault_rig)
    fault_rig.parser.set_faults(
        [
            {"kind": "http_429", "count": 2, "retry_after": 0.4, "path": UPLOAD},
            {"kind": "http_429", "retry_after": 0.05, "path": fault_rig.parse_job_path(TARGET)},
        ]
    )

    started = time.monotonic()
    fault_rig.ingest()

    assert time.monotonic() - started >= 0.4
    stats = fault_rig.parser.stats()
    assert stats["faults"] == {"http_429": 2 + FAULT_CLIENT_ATTEMPTS}
    assert stats["by_route"][UPLOAD_ROUTE] == len(remote(keys)) + 2
    # The client waited what the server asked (retry-after-ms), not its own 10 ms backoff.
    assert client_retry_delays(caplog, "docpipe_dagster.clients.llamaparse") == [
        *[0.05] * (FAULT_CLIENT_ATTEMPTS - 1),
        0.4,
        0.4,
    ]
    assert_only_failed(fault_rig, {TARGET}, "parse", "HTTP 429: Rate limit exceeded")
    recover(fault_rig, keys)


def test_parser_timeout(fault_rig: FaultRig) -> None:
    resources = fault_rig.with_clients(parser={"timeout_s": 0.75})
    keys = write_batch(fault_rig)
    fault_rig.parser.set_faults(
        [
            {"kind": "hang", "count": 1, "hang_seconds": 5, "path": UPLOAD},
            {"kind": "hang", "hang_seconds": 5, "path": fault_rig.parse_job_path(TARGET)},
        ]
    )

    fault_rig.ingest(resources)

    # The client gave up on each hung request and closed it (the mock logs 499 then).
    deadline = time.monotonic() + 6
    while fault_rig.parser.stats()["faults"].get("hang", 0) < 1 + FAULT_CLIENT_ATTEMPTS:
        assert time.monotonic() < deadline, fault_rig.parser.stats()
        time.sleep(0.05)
    stats = fault_rig.parser.stats()
    assert stats["faults"] == {"hang": 1 + FAULT_CLIENT_ATTEMPTS}
    assert stats["by_status"].get("499") == 1 + FAULT_CLIENT_ATTEMPTS
    assert_only_failed(
        fault_rig,
        {TARGET},
        "parse",
        re.compile(r"status of parse job \S+: no answer within 0.75 s"),
    )
    recover(fault_rig, keys, resources)


def test_parser_malformed_json(fault_rig: FaultRig) -> None:
    keys = write_batch(fault_rig)
    fault_rig.parser.set_faults(
        [
            {"kind": "malformed_json", "count": 2, "path": UPLOAD},
            # v2 fetches the result from the job's own path: its polls see the fault too
            {"kind": "malformed_json", "path": fault_rig.parse_job_path(TARGET)},
        ]
    )

    fault_rig.ingest()

    stats = fault_rig.parser.stats()
    assert stats["faults"] == {"malformed_json": 2 + FAULT_CLIENT_ATTEMPTS}
    assert stats["by_route"][UPLOAD_ROUTE] == len(remote(keys)) + 2
    assert_only_failed(
        fault_rig,
        {TARGET},
        "parse",
        re.compile(r"status of parse job \S+: malformed response \(not the expected JSON\)"),
    )
    recover(fault_rig, keys)


def test_parse_job_stuck_pending(fault_rig: FaultRig) -> None:
    resources = fault_rig.with_clients(parser={"deadline_s": 1.0})
    keys = write_batch(fault_rig)
    fault_rig.parser.set_faults({"kind": "parse_stuck", "count": 1})

    started = time.monotonic()
    fault_rig.ingest(resources)

    assert time.monotonic() - started < 10  # the deadline ended the wait, not a timeout
    assert fault_rig.parser.faults() == []  # the one stuck job was handed out
    (stuck,) = [k for k, j in fault_rig.jobs().items() if j["state"] == "failed"]
    jobs = assert_only_failed(
        fault_rig, {stuck}, "parse", re.compile(r"stuck.*still PENDING after 1 s")
    )
    assert jobs[stuck]["failure_code"] == "PARSE_STUCK"
    # The client cancelled the stuck job on the service instead of leaving it to run.
    assert fault_rig.parser.stats()["by_route"]["POST /api/v2/parse/{job_id}/cancel"] == 1
    recover(fault_rig, keys, resources)


def test_parse_job_error(fault_rig: FaultRig) -> None:
    keys = write_batch(fault_rig)
    fault_rig.parser.set_faults({"kind": "parse_error", "count": 1})

    fault_rig.ingest()

    assert fault_rig.parser.faults() == []
    (errored,) = [k for k, j in fault_rig.jobs().items() if j["state"] == "failed"]
    jobs = assert_only_failed(
        fault_rig,
        {errored},
        "parse",
        re.compile(r"parse job \S+ ended FAILED: INTERNAL_ERROR: An internal error occurred"),
    )
    assert jobs[errored]["failure_code"] == "INTERNAL_ERROR"
    recover(fault_rig, keys)


# --- embedder -------------------------------------------------------------------------------


def embedder_round(
    rig: FaultRig,
    transient: dict[str, Any],
    persistent: dict[str, Any],
    reason: str | re.Pattern[str],
    resources: dict[str, Any] | None = None,
) -> None:
    """Absorbed, then outlasting, then cleared: the same three steps for every fault.

    The embedder gets one request per batch here (all texts fit one), so a fault that
    outlasts the retries fails every document that needed a new vector, and only those:
    a document whose text is in the embedding cache still completes.
    """

    def embed_calls() -> int:
        return rig.embedder.stats()["by_route"].get(EMBED_ROUTE, 0)

    # 1. absorbed: the mock answered `count` faulty responses, the client asked again.
    rig.write("seed.md", SEED)
    rig.write("first.txt", FIRST)
    rig.embedder.set_faults(transient)
    rig.ingest(resources)
    assert rig.embedder.faults() == [], "the transient fault was never served"
    assert embed_calls() == 1 + transient["count"]
    assert {j["state"] for j in rig.jobs().values()} == {"completed"}
    assert rig.failed_event_count("seed.md") == rig.failed_event_count("first.txt") == 0

    # 2. outlasting: the document needing new vectors fails; the cached one completes.
    before = embed_calls()
    rig.write("copy.md", SEED)  # same text as seed.md: every vector is in the cache
    rig.write("second.txt", SECOND)
    rig.embedder.set_faults(persistent)
    rig.ingest(resources)
    assert embed_calls() - before == FAULT_CLIENT_ATTEMPTS
    assert_only_failed(rig, {"second.txt"}, "embed", reason)

    # 3. cleared: the retry run embeds it.
    recover(rig, {"seed.md", "first.txt", "copy.md", "second.txt"}, resources)


def test_embedder_5xx(fault_rig: FaultRig) -> None:
    embedder_round(
        fault_rig,
        {"kind": "http_500", "count": 2},
        {"kind": "http_503"},
        re.compile(
            r"embedding service error: embeddings API error 503: The engine is currently "
            rf"overloaded.* \(gave up after {FAULT_CLIENT_ATTEMPTS} attempts\)"
        ),
    )
    assert fault_rig.embedder.stats()["faults"] == {
        "http_500": 2,
        "http_503": FAULT_CLIENT_ATTEMPTS,
    }


def test_embedder_429_honours_rate_limit_headers(
    fault_rig: FaultRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="docpipe_dagster.clients.embeddings")
    embedder_round(
        fault_rig,
        {"kind": "http_429", "count": 2, "retry_after": 0.3},
        {"kind": "http_429", "retry_after": 0.05},
        re.compile(r"embeddings API error 429: Rate limit reached .* \(gave up after 3 attempts\)"),
    )
    # retry-after-ms set the waits: 0.3 s twice, then 0.05 s between the outlasting ones.
    assert client_retry_delays(caplog, "docpipe_dagster.clients.embeddings") == [
        *[0.05] * (FAULT_CLIENT_ATTEMPTS - 1),
        0.3,
        0.3,
    ]
    assert fault_rig.embedder.stats()["by_status"]["429"] == 2 + FAULT_CLIENT_ATTEMPTS


def test_embedder_timeout(fault_rig: FaultRig) -> None:
    embedder_round(
        fault_rig,
        {"kind": "hang", "count": 1, "hang_seconds": 5},
        {"kind": "hang", "hang_seconds": 5},
        re.compile(r"embedding service error: embeddings request failed: ReadTimeout"),
        resources=fault_rig.with_clients(embedder={"timeout_s": 0.75}),
    )


def test_embedder_wrong_count(fault_rig: FaultRig) -> None:
    embedder_round(
        fault_rig,
        {"kind": "wrong_count", "count": 1},
        {"kind": "wrong_count"},
        re.compile(
            r"embedder returned (\d+) vectors for (\d+) inputs \(gave up after 3 attempts\)"
        ),
    )


def test_embedder_wrong_dimensions(fault_rig: FaultRig) -> None:
    embedder_round(
        fault_rig,
        {"kind": "wrong_dimensions", "count": 1},
        {"kind": "wrong_dimensions"},
        "embedder returned vectors of 768 dimensions, expected 1536 (gave up after 3 attempts)",
    )


def test_embedder_malformed_json(fault_rig: FaultRig) -> None:
    embedder_round(
        fault_rig,
        {"kind": "malformed_json", "count": 2},
        {"kind": "malformed_json"},
        "embedder returned a malformed response",
    )


def test_embedder_quota_exhausted_is_not_retried(fault_rig: FaultRig) -> None:
    """429 insufficient_quota: waiting cannot fix it. One request, no client retries, the
    documents fail as not retryable (no retry storm); the batch's other documents and the
    database stay consistent."""
    fault_rig.write("seed.md", SEED)
    fault_rig.ingest()
    fault_rig.write("copy.md", SEED)
    fault_rig.write("second.txt", SECOND)
    fault_rig.embedder.set_faults({"kind": "insufficient_quota"})
    before = fault_rig.embedder.stats()["by_route"].get(EMBED_ROUTE, 0)

    fault_rig.ingest()

    assert fault_rig.embedder.stats()["by_route"][EMBED_ROUTE] - before == 1
    jobs = fault_rig.jobs()
    assert jobs["copy.md"]["state"] == jobs["seed.md"]["state"] == "completed"
    failed = jobs["second.txt"]
    assert (failed["state"], failed["failed_stage"], failed["retryable"]) == (
        "failed",
        "embed",
        False,
    )
    assert failed["failure_code"] == "insufficient_quota"
    assert "You exceeded your current quota" in failed["failure_reason"]
    assert failed["next_attempt_at"] is None
    assert fault_rig.retry_due() == []  # dead letter: not re-queued
    report = fault_rig.invariants()
    assert report.ok, report.render()
    fault_rig.assert_verify_passes()
