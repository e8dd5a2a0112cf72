"""Where is my file: the documents asset (observed by a sensor) and each batch's document table."""

from __future__ import annotations

import dagster as dg

from docpipe_dagster.defs.documents.views import DOCUMENTS_KEY, document_status_sensor
from docpipe_dagster.runner import ingest_pending
from docpipe_dagster_tests.defs.conftest import Pipeline


def _tick(pipeline: Pipeline, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        cursor=cursor, resources=pipeline.resources, instance=pipeline.instance
    ) as context:
        result = document_status_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _table(metadata: dict) -> dict[str, dict]:
    table = metadata["documents"]
    return {record.data["storage_key"]: record.data for record in table.records}


def test_the_documents_asset_lists_every_document_with_state_and_reason(pipeline: Pipeline) -> None:
    pipeline.write("guide/kites.md", "# Kites\n\nA kite flies when the wind lifts it.\n")
    pipeline.write("guide/setup.exe", b"MZ\x90\x00" + bytes(100))
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)

    first = _tick(pipeline, None)
    (observation,) = first.asset_events
    assert isinstance(observation, dg.AssetObservation)
    assert observation.asset_key == DOCUMENTS_KEY
    rows = _table(observation.metadata)
    assert rows["guide/kites.md"]["state"] == "completed"
    assert rows["guide/kites.md"]["chunks"] >= 1
    assert rows["guide/kites.md"]["parser"] == "local"  # which parser produced it
    assert rows["guide/setup.exe"]["parser"] == ""  # never parsed
    assert rows["guide/setup.exe"]["state"] == "failed"
    assert "unsupported" in rows["guide/setup.exe"]["reason"]
    assert rows["guide/setup.exe"]["batch"] == outcome.batch_key
    assert observation.metadata["documents_completed"].value == 1
    assert observation.metadata["documents_failed"].value == 1

    # Nothing changed: no new observation, so the plots are not flooded.
    idle = _tick(pipeline, first.cursor)
    assert not idle.asset_events and idle.skip_reason

    pipeline.write("guide/tides.txt", "Tides follow the moon.\n")
    ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    changed = _tick(pipeline, first.cursor)
    assert "guide/tides.txt" in _table(changed.asset_events[0].metadata)


def test_each_batch_materialization_carries_its_documents(pipeline: Pipeline) -> None:
    pipeline.write("a.md", "# A\n\nAlpha text about alpine meadows.\n")
    pipeline.write("b.txt", "Beta text about kettles.\n")
    (outcome,) = ingest_pending(resources=pipeline.resources, instance=pipeline.instance)
    event = pipeline.instance.get_latest_materialization_event(dg.AssetKey("searchable_chunks"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.partition == outcome.batch_key
    rows = _table(event.asset_materialization.metadata)
    assert {k: r["state"] for k, r in rows.items()} == {"a.md": "completed", "b.txt": "completed"}
