"""storage_intake_sensor against a real storage folder and a real database."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from docpipe_dagster.core.ids import document_id
from docpipe_dagster.defs.intake.sensors import storage_intake_sensor
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick


def keys_by_batch(pipeline: Pipeline) -> dict[str, set[str]]:
    batches: dict[str, set[str]] = {}
    for row in pipeline.rows("SELECT storage_key, batch_key FROM {S}.upload_jobs"):
        batches.setdefault(row["batch_key"], set()).add(row["storage_key"])
    return batches


def high_water_mark(result: dg.SensorResult) -> float:
    assert result.cursor is not None
    cursor = json.loads(result.cursor)
    assert "last_tick" in cursor
    return cursor["high_water_mark"]


def test_new_files_make_one_run_per_batch_and_the_cursor_advances(pipeline: Pipeline) -> None:
    paths = [pipeline.write(name, f"# {name}\n\nText of {name}.\n") for name in "abc"]
    resources = pipeline.with_settings(batch_max_files=2)

    first = tick(pipeline, None, resources)
    keys = batch_keys(first)
    assert len(keys) == 2
    assert first.skip_reason is None
    # The jobs are registered under exactly the batches the runs were requested for.
    batches = keys_by_batch(pipeline)
    assert set(batches) == set(keys)
    assert sorted(sorted(v) for v in batches.values()) == [["a", "b"], ["c"]]
    assert {j["state"] for j in pipeline.jobs().values()} == {"uploaded"}
    newest = max(p.stat().st_mtime for p in paths)
    assert abs(high_water_mark(first) - newest) < 1e-3

    # Nothing new: no run, a reason to show in the UI, a cursor that still parses.
    second = tick(pipeline, first.cursor, resources)
    assert not second.run_requests
    assert second.skip_reason is not None and "nothing new" in second.skip_reason.skip_message
    assert high_water_mark(second) == high_water_mark(first)
    assert len(pipeline.jobs()) == 3

    later = pipeline.write("d", "# d\n\nA later file.\n")
    third = tick(pipeline, second.cursor, resources)
    assert len(batch_keys(third)) == 1
    assert high_water_mark(third) > high_water_mark(second)
    assert abs(high_water_mark(third) - later.stat().st_mtime) < 1e-3


def test_a_changed_file_gets_a_new_job_in_a_batch_of_its_own(pipeline: Pipeline) -> None:
    pipeline.write("keep.md", "# Keep\n\nUnchanged.\n")
    pipeline.write("edit.md", "# Edit\n\nFirst version.\n")
    first = tick(pipeline, None)
    assert len(batch_keys(first)) == 1
    before = pipeline.jobs()

    pipeline.write("edit.md", "# Edit\n\nSecond version, longer than the first.\n")
    second = tick(pipeline, first.cursor)
    (key,) = batch_keys(second)
    jobs = pipeline.jobs()
    assert jobs["edit.md"]["batch_key"] == key
    assert jobs["edit.md"]["job_id"] != before["edit.md"]["job_id"]
    assert jobs["edit.md"]["document_id"] == before["edit.md"]["document_id"]
    assert keys_by_batch(pipeline)[key] == {"edit.md"}
    assert jobs["keep.md"]["job_id"] == before["keep.md"]["job_id"]

    # Same bytes, new mtime: not a new version.
    os.utime(pipeline.storage_dir / "keep.md", (time.time() - 10, time.time() - 10))
    third = tick(pipeline, second.cursor)
    assert not third.run_requests
    assert len(pipeline.rows("SELECT 1 FROM {S}.upload_jobs")) == 3


def test_a_deleted_file_leaves_search_with_an_event(pipeline: Pipeline) -> None:
    pipeline.write("stays.md", "# Stays\n\nThis document stays in storage.\n")
    pipeline.write("goes.md", "# Goes\n\nThis document is deleted from storage.\n")
    first = tick(pipeline, None)
    (key,) = batch_keys(first)
    assert pipeline.run(key).success
    goes = document_id("goes.md")
    assert pipeline.rows("SELECT 1 FROM {S}.document_chunks WHERE document_id = %s", (goes,))

    pipeline.delete("goes.md")
    second = tick(pipeline, first.cursor)
    assert not second.run_requests
    assert json.loads(second.cursor or "{}")["last_tick"]["deleted"] == 1
    job = pipeline.jobs()["goes.md"]
    assert job["state"] == "deleted"
    assert not pipeline.rows("SELECT 1 FROM {S}.document_chunks WHERE document_id = %s", (goes,))
    assert pipeline.rows(
        "SELECT 1 FROM {S}.document_chunks WHERE document_id = %s", (document_id("stays.md"),)
    )
    events = pipeline.rows(
        "SELECT payload FROM {S}.events WHERE job_id = %s AND event_type = 'deleted'",
        (job["job_id"],),
    )
    assert len(events) == 1 and events[0]["payload"]["chunks_removed"] >= 1
    assert pipeline.jobs()["stays.md"]["state"] == "completed"

    # The deletion is synced once, not on every tick.
    third = tick(pipeline, second.cursor)
    assert json.loads(third.cursor or "{}")["last_tick"]["deleted"] == 0


def test_a_half_written_file_waits_until_it_settles(pipeline: Pipeline) -> None:
    resources = pipeline.with_settings(settle_seconds=30.0)
    path = pipeline.write("growing.txt", "still being writ", mtime=time.time())
    pipeline.write("done.txt", "finished long ago")

    first = tick(pipeline, None, resources)
    batch_keys(first)
    assert set(pipeline.jobs()) == {"done.txt"}
    assert json.loads(first.cursor or "{}")["last_tick"]["unstable"] == 1

    path.write_text("still being written, and now complete")
    second = tick(pipeline, first.cursor, resources)  # modified again just now
    assert not second.run_requests
    assert second.skip_reason is not None and "1 settling" in second.skip_reason.skip_message

    settled = time.time() - 60
    os.utime(path, (settled, settled))
    third = tick(pipeline, second.cursor, resources)
    (key,) = batch_keys(third)
    job = pipeline.jobs()["growing.txt"]
    assert job["batch_key"] == key
    assert job["size_bytes"] == len("still being written, and now complete")


def test_a_burst_is_shared_evenly_by_the_runs_the_queue_runs_at_once(
    pipeline: Pipeline,
) -> None:
    for i in range(12):
        pipeline.write(f"doc{i:02}.txt", f"Body of document {i}.")
    resources = pipeline.with_settings(batch_max_files=5)
    queue = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "concurrency": {"runs": {"max_concurrent_runs": 2}},
    }
    with (
        dg.instance_for_test(overrides=queue) as instance,
        dg.build_sensor_context(resources=resources, instance=instance) as context,
    ):
        result = storage_intake_sensor(context)
    # Three batches of four would leave one run with the last batch alone; four of three
    # keep both runs busy to the end.
    assert len(batch_keys(result)) == 4
    assert sorted(len(v) for v in keys_by_batch(pipeline).values()) == [3, 3, 3, 3]


def test_work_per_tick_is_capped_and_the_rest_deferred(pipeline: Pipeline) -> None:
    names = [f"doc{i}.txt" for i in range(7)]
    for name in names:
        pipeline.write(name, f"Body of {name}.")
    resources = pipeline.with_settings(batch_max_files=2, max_batches_per_tick=2)

    first = tick(pipeline, None, resources)
    keys = batch_keys(first)
    assert len(keys) == 2
    assert sorted(len(v) for v in keys_by_batch(pipeline).values()) == [2, 2]
    assert json.loads(first.cursor or "{}")["last_tick"]["deferred"] == 3

    second = tick(pipeline, first.cursor, resources)
    assert len(batch_keys(second)) == 2
    assert sorted(len(v) for v in keys_by_batch(pipeline).values()) == [1, 2, 2, 2]

    third = tick(pipeline, second.cursor, resources)
    assert not third.run_requests
    assert set(pipeline.jobs()) == set(names)
    assert len(pipeline.rows("SELECT 1 FROM {S}.upload_jobs")) == 7


def test_hidden_temporary_and_lock_files_are_ignored(pipeline: Pipeline) -> None:
    for junk in (".~lock.x#", "x.part", ".hidden", "sub/.cache/y.txt"):
        pipeline.write(junk, "not a document")
    pipeline.write("real.txt", "a real document")

    first = tick(pipeline, None)
    assert len(batch_keys(first)) == 1
    assert set(pipeline.jobs()) == {"real.txt"}
    assert json.loads(first.cursor or "{}")["last_tick"]["ignored"] == 4

    # Removing ignored files is not a deletion of anything.
    pipeline.delete("x.part")
    second = tick(pipeline, first.cursor)
    assert json.loads(second.cursor or "{}")["last_tick"]["deleted"] == 0
    assert pipeline.jobs()["real.txt"]["state"] == "uploaded"


def test_an_unreadable_folder_is_not_taken_for_deleted_files(
    tmp_path: Path, database_url: str
) -> None:
    """Files the listing could not read are not evidence of deletion."""
    from docpipe_dagster.clients.storage import FolderStorage
    from docpipe_dagster.pipeline.intake import IntakeConfig, scan_storage
    from docpipe_dagster.store.queries import Store

    class FlakyFolder(FolderStorage):
        """A folder whose `team/` subfolder stops being readable after the first listing."""

        broken = False

        def _walk(self, folder, rel_folder, prefix):
            if self.broken and rel_folder == "team":
                self._skip("team", "cannot read folder: Permission denied")
                return
            yield from super()._walk(folder, rel_folder, prefix)

    root = tmp_path / "flaky"
    (root / "team").mkdir(parents=True)
    for name in ("team/a.md", "b.md"):
        (root / name).write_text(f"# {name}\n\ncontent of {name}\n")
        os.utime(root / name, (1_000_000, 1_000_000))
    backend = FlakyFolder(root)
    with Store.open(database_url, max_size=2) as store:
        first = scan_storage(backend, store, IntakeConfig(settle_seconds=0))
        assert first.registered == 2
        backend.broken = True
        (root / "b.md").unlink()
        second = scan_storage(backend, store, IntakeConfig(settle_seconds=0))
        assert second.deleted == 1  # b.md really is gone; team/a.md was merely unreadable
        states = {k: j.state for k, j in store.current_versions().items()}
        assert states == {"team/a.md": "uploaded"}


def test_each_new_file_is_read_once_on_the_way_in(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick that hashes a file also judges its content; the batch run's intake check
    downloads nothing, and parsing reads the bytes it parses (verified against the hash)."""
    from docpipe_dagster.clients.storage.folder import FolderStorage
    from docpipe_dagster.runner import ingest_pending

    reads: list[str] = []
    real_read = FolderStorage.read

    def counted(self: FolderStorage, key: str) -> bytes:
        reads.append(key)
        return real_read(self, key)

    monkeypatch.setattr(FolderStorage, "read", counted)
    pipeline.write("notes.txt", "# Notes\n\nPlain text, parsed in-process.\n")
    pipeline.write("guide.md", "# Guide\n\nMarkdown, parsed in-process.\n")
    pipeline.write("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)) * 4)

    first = tick(pipeline, None)
    assert len(batch_keys(first)) == 1
    assert sorted(reads) == ["guide.md", "notes.txt", "setup.exe"]  # hashed and judged
    jobs = pipeline.jobs()
    refused = jobs["setup.exe"]
    # Refused from the bytes just hashed: failed at intake with the reason, not retried.
    assert (refused["state"], refused["failed_stage"]) == ("failed", "intake")
    assert "unsupported file type .exe" in refused["failure_reason"]
    assert refused["retryable"] is False

    reads.clear()
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    # In the run: one read per parsed file (parsing), none for the intake check.
    assert sorted(reads) == ["guide.md", "notes.txt"]
    states = {k: j["state"] for k, j in pipeline.jobs().items()}
    assert states == {"notes.txt": "completed", "guide.md": "completed", "setup.exe": "failed"}


def test_a_file_changed_or_removed_after_registration_is_caught_where_it_is_read(
    pipeline: Pipeline,
) -> None:
    from docpipe_dagster.runner import run_batch

    pipeline.write("stays.md", "# Stays\n\nParsed as registered.\n")
    pipeline.write("edited.md", "# Edited\n\nThe registered version.\n")
    pipeline.write("gone.md", "# Gone\n\nRemoved before its run.\n")
    (key,) = batch_keys(tick(pipeline, None))
    pipeline.write("edited.md", "# Edited\n\nA newer version, written after registration.\n")
    pipeline.delete("gone.md")

    outcome = run_batch(key, resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success
    jobs = pipeline.jobs()
    assert jobs["stays.md"]["state"] == "completed"
    assert jobs["edited.md"]["state"] == "superseded"  # the sensor registers the new bytes
    assert jobs["gone.md"]["state"] == "deleted"


def test_a_tick_stops_reading_when_its_time_is_up(pipeline: Pipeline) -> None:
    """A burst bigger than one tick can read is registered over several ticks, each returning
    in time, so no registered batch loses its run to Dagster's sensor timeout."""
    from docpipe_dagster.pipeline.intake import IntakeConfig, scan_storage

    for i in range(3):
        pipeline.write(f"burst{i}.txt", f"Burst document number {i}.")
    backend = pipeline.resources["storage"].open()
    store = pipeline.resources["database"].store()
    out_of_time = IntakeConfig(settle_seconds=0.0, read_budget_seconds=0.0)

    registered = []
    for _ in range(3):
        result = scan_storage(backend, store, out_of_time)
        registered.append(result.registered)
        assert result.deferred == 2 - sum(registered[:-1])
    assert registered == [1, 1, 1]
    assert set(pipeline.jobs()) == {"burst0.txt", "burst1.txt", "burst2.txt"}
