"""The staging buffers' planner statistics after a drain: refilled buffers are analyzed
again (StagingStore._analyze_if_stale says why)."""

from __future__ import annotations

from docpipe_dagster_tests.pipeline.conftest import Stages, commit, through_embed
from docpipe_dagster_tests.support import MockServer

BUFFERS = ("document_chunk_buffer", "document_vector_buffer")


def _docs(prefix: str, n: int) -> dict[str, str]:
    return {
        f"{prefix}/{i}.md": f"# {prefix} {i}\n\n" + f"paragraph {i} of {prefix}, " * 40
        for i in range(n)
    }


def _statistics(stages: Stages, buffer: str) -> tuple[float, int]:
    row = stages.rows(
        "SELECT reltuples, relpages FROM pg_class WHERE oid = %s::regclass",
        (f"upload_pipeline.{buffer}",),
    )[0]
    return row["reltuples"], row["relpages"]


def _staged(stages: Stages, buffer: str) -> int:
    return stages.rows(f"SELECT count(*) AS n FROM {{S}}.{buffer}")[0]["n"]


def test_buffers_analyzed_while_drained_are_analyzed_again_when_refilled(
    stages: Stages, openai_mock: MockServer
) -> None:
    first = through_embed(stages, openai_mock, _docs("first", 20))
    assert commit(stages, first).succeeded == 20
    for buffer in BUFFERS:
        # what autovacuum does once the drain has changed enough of the buffer
        stages.execute(f"ANALYZE {{S}}.{buffer}")
        reltuples, relpages = _statistics(stages, buffer)
        assert reltuples == 0 and relpages > 0, (buffer, reltuples, relpages)

    second = stages.parsed(_docs("second", 30))
    stages.chunk(second)
    chunks = _staged(stages, "document_chunk_buffer")
    assert chunks > 30
    assert _statistics(stages, "document_chunk_buffer")[0] == chunks

    assert stages.embed(second, openai_mock).failed == 0
    assert _statistics(stages, "document_vector_buffer")[0] == chunks


def test_buffers_with_statistics_that_hold_are_not_analyzed(
    stages: Stages, openai_mock: MockServer
) -> None:
    # Never analyzed (reltuples -1): the planner estimates from the pages; nothing to mend.
    batch = through_embed(stages, openai_mock, _docs("only", 10))
    assert _staged(stages, "document_vector_buffer") > 0
    for buffer in BUFFERS:
        assert _statistics(stages, buffer)[0] == -1, buffer
    assert commit(stages, batch).succeeded == 10
