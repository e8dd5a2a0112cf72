"""Parse results are saved in groups (a few transactions a batch), and a bad one fails alone."""

from __future__ import annotations

import asyncio

import pytest

from docpipe_dagster.pipeline.parse import _GroupSaver
from docpipe_dagster.store.queries import JobRow, ParsedJob
from docpipe_dagster_tests.defs.conftest import Pipeline, batch_keys, tick

NOTES = "Sourdough needs a lively starter, a slow rise and a hot oven."


def _register(pipeline: Pipeline, files: int) -> str:
    for i in range(files):
        pipeline.write(f"notes/loaf-{i}.txt", f"{NOTES} Loaf number {i}.")
    (key,) = batch_keys(tick(pipeline, None))
    return key


def test_fast_parses_share_transactions_and_every_one_is_recorded(pipeline: Pipeline) -> None:
    key = _register(pipeline, 30)  # .txt is parsed in-process: the answers come at once
    assert pipeline.run(key).success
    parsed = pipeline.rows(
        "SELECT job_id, xmin::text AS tx FROM upload_pipeline.events"
        " WHERE stage = 'parse' AND event_type = 'parsed'"
    )
    assert len({r["job_id"] for r in parsed}) == 30
    assert len({r["tx"] for r in parsed}) < 30  # grouped: fewer transactions than results
    cached = pipeline.rows("SELECT count(*) AS n FROM upload_pipeline.parse_cache")
    assert cached[0]["n"] == 30
    assert {j["state"] for j in pipeline.jobs().values()} == {"completed"}


def test_a_result_the_database_refuses_fails_alone(pipeline: Pipeline) -> None:
    key = _register(pipeline, 3)
    with pipeline.store() as store:
        jobs = [
            JobRow.from_row(r)
            for r in pipeline.rows(
                "SELECT * FROM upload_pipeline.upload_jobs WHERE batch_key = %s ORDER BY storage_key",
                (key,),
            )
        ]
        # Postgres text cannot hold NUL: this one result makes its group's statement fail.
        texts = ["fine one", "bad \x00 one", "fine two"]
        items = [
            ParsedJob(job, "local", text, 1, None, cache_hit=False)
            for job, text in zip(jobs, texts, strict=True)
        ]

        async def save_all() -> list[bool | BaseException]:
            saver = _GroupSaver(store)
            return await asyncio.gather(*(saver.save(i) for i in items), return_exceptions=True)

        results = asyncio.run(save_all())
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], Exception)
    states = {j["storage_key"]: j["state"] for j in pipeline.jobs().values()}
    assert states == {
        "notes/loaf-0.txt": "parsed",
        "notes/loaf-1.txt": "uploaded",
        "notes/loaf-2.txt": "parsed",
    }


@pytest.mark.parametrize("state", ["deleted", "superseded"])
def test_a_job_that_left_parsing_meanwhile_is_left_as_it_is(pipeline: Pipeline, state: str) -> None:
    key = _register(pipeline, 2)
    rows = pipeline.rows(
        "SELECT * FROM upload_pipeline.upload_jobs WHERE batch_key = %s ORDER BY storage_key",
        (key,),
    )
    jobs = [JobRow.from_row(r) for r in rows]
    pipeline.execute(
        "UPDATE upload_pipeline.upload_jobs SET state = %s WHERE job_id = %s",
        (state, jobs[0].job_id),
    )
    with pipeline.store() as store:
        saved = store.save_parses(
            [ParsedJob(job, "local", "some text", 1, None, cache_hit=False) for job in jobs]
        )
    assert saved == {jobs[1].job_id}
    states = {j["storage_key"]: j["state"] for j in pipeline.jobs().values()}
    assert states == {"notes/loaf-0.txt": state, "notes/loaf-1.txt": "parsed"}
