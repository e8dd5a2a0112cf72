"""The HNSW index of a vector space: built in one pass after a bulk load, inserted into by
small batches, rebuilt after a crash, and kept whole while batches are still in flight."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from docpipe_dagster.defs.resources import build_resources
from docpipe_dagster.pipeline.commit import IndexSettings, commit_documents
from docpipe_dagster.pipeline.intake import IntakeConfig
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster.store.queries import BulkLoadPlan, VectorSpace
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick

TOPICS = ["lighthouse lamps", "glacier crampons", "sourdough starter", "violin varnish"]


def doc(i: int, paragraphs: int = 6) -> str:
    topic = TOPICS[i % len(TOPICS)]
    body = "\n\n".join(
        f"Paragraph {p} of note {i} about {topic}: "
        + f"the {topic} detail number {p} matters. " * 20
        for p in range(paragraphs)
    )
    return f"# Note {i}: {topic}\n\n{body}\n"


def space_row(pipeline: Pipeline) -> dict[str, Any]:
    space = pipeline.space()
    (row,) = pipeline.rows(
        "SELECT index_name, vector_type, index_state, to_regclass('upload_pipeline.' || index_name)"
        " IS NOT NULL AS present FROM {S}.vector_spaces WHERE embedding_model = %s AND dims = %s",
        (space.model, space.dims),
    )
    return row


def commit_metadata(pipeline: Pipeline, run_id: str) -> dict[str, Any]:
    return pipeline.materializations(run_id)["searchable_chunks"]


def test_a_first_load_builds_the_index_once_after_committing(pipeline: Pipeline) -> None:
    for i in range(4):
        pipeline.write(f"notes/{i}.md", doc(i))
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert outcome.success
    chunks = pipeline.rows("SELECT count(*) AS n FROM {S}.document_chunks")[0]["n"]
    meta = commit_metadata(pipeline, outcome.run_id)
    assert meta["index_dropped_for_bulk_load"] == 1
    assert meta["index_rebuilt_rows"] == chunks
    assert space_row(pipeline)["index_state"] == "ready"
    assert space_row(pipeline)["present"]
    hits = pipeline.search("the glacier crampons detail number 3 matters")
    assert hits and "glacier crampons" in hits[0].text


def test_a_small_batch_inserts_into_the_existing_index(pipeline: Pipeline) -> None:
    for i in range(4):
        pipeline.write(f"notes/{i}.md", doc(i))
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    pipeline.write("notes/late.md", "# Late\n\nOne short note about violin varnish.\n")
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    meta = commit_metadata(pipeline, outcome.run_id)
    assert "index_dropped_for_bulk_load" not in meta
    assert meta["index_rows_before"] > 0
    assert space_row(pipeline)["present"]
    assert pipeline.search("One short note about violin varnish.")[0].storage_key == "notes/late.md"


def test_the_rebuild_waits_for_the_batches_in_flight(pipeline: Pipeline) -> None:
    for i in range(4):
        pipeline.write(f"notes/{i}.md", doc(i))
    first, second = batch_keys(tick(pipeline, None, pipeline.with_settings(batch_max_files=2)))
    assert pipeline.run(first).success
    # The second batch is registered but not run: the index stays dropped meanwhile, and
    # search still answers (an exact scan).
    row = space_row(pipeline)
    assert (row["index_state"], row["present"]) == ("rebuilding", False)
    assert pipeline.search("the lighthouse lamps detail number 2 matters")
    assert pipeline.run(second).success
    row = space_row(pipeline)
    assert (row["index_state"], row["present"]) == ("ready", True)
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}


def test_a_load_larger_than_one_scan_builds_the_index_once_at_the_end(
    pipeline: Pipeline,
) -> None:
    """`ingest_pending` registers what one scan may not (here one file per scan) while the
    first batches run, so the load stays one bulk load: the index is dropped by the first
    commit and built by the last batch only, over every row. Registered round by round, the
    first batch would build it alone and the rest would insert into it row by row."""
    for i in range(4):
        pipeline.write(f"notes/{i}.md", doc(i))
    one_per_scan = IntakeConfig(settle_seconds=0.0, batch_max_files=1, max_batches_per_tick=1)
    outcomes = ingest_pending(
        resources=pipeline.resources, instance=pipeline.instance, intake=one_per_scan
    )
    assert len(outcomes) == 4 and all(o.success for o in outcomes)
    builds = [commit_metadata(pipeline, o.run_id).get("index_rebuilt_rows") for o in outcomes]
    chunks = pipeline.rows("SELECT count(*) AS n FROM {S}.document_chunks")[0]["n"]
    assert builds == [None, None, None, chunks]
    assert (space_row(pipeline)["index_state"], space_row(pipeline)["present"]) == ("ready", True)


def test_an_index_left_dropped_by_a_crash_is_rebuilt(pipeline: Pipeline) -> None:
    for i in range(4):
        pipeline.write(f"notes/{i}.md", doc(i))
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    name = space_row(pipeline)["index_name"]
    # A run died between dropping the index and building it again.
    pipeline.execute(f'DROP INDEX upload_pipeline."{name}"')
    pipeline.execute("UPDATE {S}.vector_spaces SET index_state = 'rebuilding'")
    with pipeline.store() as store:  # any commit stage repairs it, even with nothing to commit
        report = commit_documents(store, "no-such-batch", space=pipeline.space(), max_attempts=3)
    assert report.counters["index_rebuilt_rows"] > 0
    assert space_row(pipeline)["present"]


def test_an_index_dropped_by_hand_is_recreated(pipeline: Pipeline) -> None:
    pipeline.write("notes/0.md", doc(0))
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    pipeline.execute(f'DROP INDEX upload_pipeline."{space_row(pipeline)["index_name"]}"')
    pipeline.write("notes/1.md", doc(1, paragraphs=1))
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    assert space_row(pipeline)["present"]


def test_bulk_mode_can_be_turned_off(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_INDEX_BULK_THRESHOLD", "inf")
    for i in range(2):
        pipeline.write(f"notes/{i}.md", doc(i))
    (outcome,) = ingest_pending(resources=build_resources(), instance=pipeline.instance)
    assert outcome.success
    meta = commit_metadata(pipeline, outcome.run_id)
    assert "index_dropped_for_bulk_load" not in meta and "index_rebuilt_rows" not in meta
    assert space_row(pipeline)["present"]


def test_when_a_bulk_load_pays() -> None:
    settings = IndexSettings(bulk_threshold=0.25)
    plan = BulkLoadPlan(index_state="ready", existing_rows=1000, incoming_rows=100, pending_rows=0)
    assert not settings.wants_bulk(plan)
    assert settings.wants_bulk(replace(plan, pending_rows=200))  # the batches still to come count
    assert settings.wants_bulk(replace(plan, existing_rows=0))
    assert not settings.wants_bulk(replace(plan, index_state="off", existing_rows=0))
    assert not IndexSettings(bulk_threshold=float("inf")).wants_bulk(replace(plan, existing_rows=0))


def test_a_halfvec_index_is_built_and_searched(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPIPE_VECTOR_TYPE", "halfvec")
    resources = build_resources()
    assert resources["embedder"].space() == VectorSpace(pipeline.space().model, 1536, "halfvec")
    for i in range(3):
        pipeline.write(f"notes/{i}.md", doc(i))
    (outcome,) = ingest_pending(resources=resources, instance=pipeline.instance)
    assert outcome.success
    row = space_row(pipeline)
    assert (row["vector_type"], row["index_state"], row["present"]) == ("halfvec", "ready", True)
    (indexdef,) = pipeline.rows(
        "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (row["index_name"],)
    )
    assert "halfvec" in indexdef["indexdef"]
    pipeline.resources = resources
    hits = pipeline.search("the sourdough starter detail number 4 matters")
    assert hits and "sourdough starter" in hits[0].text


def test_halfvec_is_refused_above_its_limit_and_vector_above_2000() -> None:
    with pytest.raises(ValueError):
        VectorSpace("m", 3072, "vector")
    with pytest.raises(ValueError):
        VectorSpace("m", 512, "float8")
    assert VectorSpace("m", 3072).vector_type == "halfvec"
