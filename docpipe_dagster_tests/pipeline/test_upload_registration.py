"""register_upload (the HTTP API's push path) over a real Store and a storage folder: the same
judgement as the intake sensor, a batch of its own, and one registration per version however
many processes try (only the one that registered it launches its run)."""

from __future__ import annotations

import threading

from docpipe_dagster.pipeline.intake import (
    IntakeConfig,
    UploadRegistration,
    register_upload,
    scan_storage,
)
from docpipe_dagster.store.documents import UPLOAD_PREFIX
from docpipe_dagster_tests.pipeline.conftest import Stages

DOC = b"# Kites\n\nBox kites fly steadily in a strong breeze over the dunes.\n"


def upload(stages: Stages, key: str, data: bytes) -> UploadRegistration:
    """What the API does: write the file, then register what the write reported."""
    return register_upload(stages.store, stages.storage.write(key, data), data)


def scan(stages: Stages):
    return scan_storage(stages.storage, stages.store, IntakeConfig(settle_seconds=0.0))


def test_an_upload_is_registered_once_in_a_batch_of_its_own(stages: Stages) -> None:
    first = upload(stages, "kites/box.md", DOC)
    assert first.needs_run and first.batch_key and first.batch_key.startswith(UPLOAD_PREFIX)
    job = stages.jobs()["kites/box.md"]
    assert (job["job_id"], job["state"], job["batch_key"]) == (
        first.job_id,
        "uploaded",
        first.batch_key,
    )
    assert stages.events(job["job_id"]) == [("intake", "registered")]

    # The same bytes again (a second upload, or the sensor's next tick): nothing to launch.
    again = upload(stages, "kites/box.md", DOC)
    assert (again.job_id, again.batch_key, again.unchanged) == (first.job_id, None, True)
    assert not again.needs_run
    result = scan(stages)
    assert (result.registered, result.unchanged, result.batches) == (0, 1, {})
    assert stages.events(job["job_id"]) == [("intake", "registered")]

    # New content is a new version in a new batch of its own.
    changed = upload(stages, "kites/box.md", DOC + b"\nDelta kites need less wind.\n")
    assert changed.needs_run and changed.job_id != first.job_id
    assert changed.batch_key != first.batch_key


def test_registering_at_once_from_two_processes_launches_one_run(stages: Stages) -> None:
    stored = stages.storage.write("race.md", DOC)
    barrier = threading.Barrier(4)
    outcomes: list[UploadRegistration] = []

    def register() -> None:
        barrier.wait()
        outcomes.append(register_upload(stages.store, stored, DOC))

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.needs_run for o in outcomes) == 1, outcomes
    assert len({o.job_id for o in outcomes}) == 1
    assert len(stages.rows("SELECT 1 FROM {S}.events WHERE event_type = 'registered'")) == 1


def test_the_sensor_first_means_no_launch(stages: Stages) -> None:
    stored = stages.storage.write("first.md", DOC)
    assert scan(stages).registered == 1  # the sensor's tick got there first
    late = register_upload(stages.store, stored, DOC)
    assert not late.needs_run and late.batch_key is None
    assert not stages.jobs()["first.md"]["batch_key"].startswith(UPLOAD_PREFIX)


def test_a_refused_upload_fails_at_intake_as_the_sensor_fails_it(stages: Stages) -> None:
    fake_pdf = b"this is plain text wearing a .pdf name\n"
    refused = upload(stages, "pushed/report.pdf", fake_pdf)
    assert refused.batch_key and refused.refused and not refused.needs_run
    stages.write("scanned/report.pdf", fake_pdf)
    scan(stages)
    jobs = stages.jobs()
    pushed, scanned = jobs["pushed/report.pdf"], jobs["scanned/report.pdf"]
    for job in (pushed, scanned):
        assert (job["state"], job["failed_stage"]) == ("failed", "intake")
    assert pushed["failure_reason"] == scanned["failure_reason"] == refused.refused
    assert pushed["failure_code"] == scanned["failure_code"] == "UNSUPPORTED"
    assert stages.events(pushed["job_id"]) == [("intake", "registered"), ("intake", "failed")]
