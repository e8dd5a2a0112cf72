"""scan_storage (the public entry point only) over a real Store and a storage folder."""

from __future__ import annotations

from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.ids import document_id, job_id
from docpipe_dagster.pipeline.intake import IntakeConfig, scan_storage
from docpipe_dagster_tests.pipeline.conftest import Stages


def scan(stages: Stages, **config: object):
    return scan_storage(stages.storage, stages.store, IntakeConfig(settle_seconds=0.0, **config))


def test_new_files_become_uploaded_jobs_with_derived_ids(stages: Stages) -> None:
    stages.write("docs/a.md", "alpha")
    stages.write("b.csv", "x,y\n1,2\n")
    stages.write(".hidden.md", "ignored")
    result = scan(stages)

    assert (result.listed, result.registered, result.ignored) == (3, 2, 1)
    ((batch, queued),) = result.batches.items()
    jobs = stages.jobs()
    assert set(jobs) == {"docs/a.md", "b.csv"}
    for key, job in jobs.items():
        sha = sha256_bytes((stages.storage.root / key).read_bytes())
        assert job["content_sha256"] == sha
        assert job["document_id"] == document_id(key)
        assert job["job_id"] == job_id(document_id(key), sha)
        assert (job["state"], job["batch_key"]) == ("uploaded", batch)
        assert stages.events(job["job_id"]) == [("intake", "registered")]
    assert sorted(queued) == sorted(j["job_id"] for j in jobs.values())


def test_unchanged_changed_and_deleted_files(stages: Stages) -> None:
    stages.write("same.md", "same")
    stages.write("edit.md", "v1")
    stages.write("gone.md", "bye")
    scan(stages)
    first = stages.jobs()

    assert scan(stages).registered == 0  # nothing changed: nothing registered
    stages.write("edit.md", "v2")
    (stages.storage.root / "gone.md").unlink()
    result = scan(stages)

    assert (result.registered, result.deleted) == (1, 1)
    jobs = stages.jobs()
    assert jobs["same.md"]["job_id"] == first["same.md"]["job_id"]
    assert jobs["edit.md"]["job_id"] != first["edit.md"]["job_id"]
    assert jobs["edit.md"]["document_id"] == first["edit.md"]["document_id"]
    assert jobs["edit.md"]["state"] == "uploaded"
    assert jobs["gone.md"]["state"] == "deleted"


def test_files_still_being_written_wait(stages: Stages) -> None:
    path = stages.storage.root / "fresh.md"
    path.write_text("just written")  # mtime now: not settled for a 60 s window
    result = scan_storage(stages.storage, stages.store, IntakeConfig(settle_seconds=60.0))
    assert (result.unstable, result.registered) == (1, 0)
    assert stages.jobs() == {}


def test_batches_respect_the_file_cap(stages: Stages) -> None:
    for i in range(5):
        stages.write(f"f{i}.md", f"file {i}")
    result = scan(stages, batch_max_files=2)
    assert result.registered == 5
    assert sum(len(ids) for ids in result.batches.values()) == 5
    assert all(len(ids) <= 2 for ids in result.batches.values())
    by_batch = {j["batch_key"] for j in stages.jobs().values()}
    assert by_batch == set(result.batches)
