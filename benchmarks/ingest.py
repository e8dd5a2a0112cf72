"""The ingest benchmark: `python -m benchmarks.ingest [--docs 1000] [--dims 1536] [--quick]`.

In one invocation, on its own embedded Postgres (a temp DOCPIPE_HOME, or the server of
--database-url / DOCPIPE_DATABASE_URL) and its own mocks on free 127.0.0.1 ports:

(a) limits: pgvector's write limits at the configured dimension with the corpus's vectors
    (COPY into an unindexed table, inserts into an HNSW-indexed table, HNSW build after load);
(b) a direct baseline: a plain asyncio script, httpx to the same mocks, COPY, no Dagster;
(c) docpipe end to end through the asset graph (`runner.ingest_pending`, in-process
    `dg.materialize` per batch, as `docpipe ingest --wait` runs it);

over the scenarios: overhead only, realistic latency, bulk first load (+ options: reduced
`dimensions`, halfvec, bulk mode off), re-run of an unchanged corpus, trickle, memory growth
(N vs 10 N documents) and upload -> searchable latency under `docpipe dev`. It prints a table
and the targets, and writes every figure as JSON (--out). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks import corpus as corpus_mod
from benchmarks.infra import REPO_ROOT, Infra, RssSampler, child_env
from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS
from docpipe_dagster.config import LOCAL_MOCK_API_KEY

SCENARIOS = (
    "overhead",
    "limits",
    "realistic",
    "bulk",
    "options",
    "rerun",
    "trickle",
    "memory",
    "dev",
    "peers",  # opt-in (`--scenarios peers`): needs the bench extra, see benchmarks/peers/
)
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "peers")
TARGETS = {
    "overhead": "docpipe >= 0.8 x direct baseline (vectors/s), zero-latency mocks, no index",
    "bulk": "docpipe >= 0.85 x HNSW load+build-after-load limit (vectors/s)",
    "trickle": "docpipe >= 0.85 x HNSW insert limit (vectors/s, one client)",
    "rerun": "0 external calls and <= 3 % of the first run's time",
    "memory": "peak RSS at 10 N documents <= 1.3 x at N documents",
    "dev": "upload -> searchable p50 <= 10 s under docpipe dev",
    "peers": "docpipe ingest --wait (whole process) >= 2 x the faster peer (docs/s, first load)",
}


# --- helpers ---------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def _rate(n: float, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def _cpu(pids: list[int], with_children: bool = False) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
        if with_children:
            total += t.children_user + t.children_system
    return total


class Bench:
    def __init__(self, args: argparse.Namespace, infra: Infra) -> None:
        self.args = args
        self.infra = infra
        self.work = infra.workdir
        self.native_dims = MODEL_DIMENSIONS.get(args.model)
        self.results: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.counter = 0
        self.texts: list[str] = []

    # --- one measured run in a subprocess ----------------------------------------------------
    def _env(self, url: str, storage: Path, **extra: str) -> dict[str, str]:
        a = self.args
        env = {
            "DOCPIPE_DATABASE_URL": url,
            # Dagster's own storage is an ephemeral instance in the worker; this stops the
            # database resource from creating a `<db>_dagster` database it would not use.
            "DOCPIPE_DAGSTER_DATABASE_URL": url,
            "DOCPIPE_HOME": str(self.work / "docpipe-home"),
            "DOCPIPE_STORAGE_BACKEND": "folder",
            "DOCPIPE_STORAGE_DIR": str(storage),
            "LLAMAPARSE_BASE_URL": self.infra.parser.base_url,
            "OPENAI_BASE_URL": self.infra.embedder.base_url + "/v1",
            "LLAMA_CLOUD_API_KEY": LOCAL_MOCK_API_KEY,
            "OPENAI_API_KEY": LOCAL_MOCK_API_KEY,
            "DOCPIPE_EMBEDDING_MODEL": a.model,
            "DOCPIPE_SETTLE_SECONDS": "0",
            "DOCPIPE_INDEX_MAINTENANCE_WORK_MEM": a.maintenance_work_mem,
            "DOCPIPE_INDEX_PARALLEL_WORKERS": str(a.parallel_workers),
        }
        if a.dims != self.native_dims:
            env["DOCPIPE_EMBEDDING_DIMENSIONS"] = str(a.dims)
        env.update(extra)
        return child_env(**env)

    def run(
        self,
        system: str,
        *,
        url: str,
        storage: Path,
        parser_latency_ms: float = 0.0,
        embedder_latency_ms: float = 0.0,
        env: dict[str, str] | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        """One run of docpipe or the baseline in a fresh process; returns its figures."""
        a = self.args
        self.counter += 1
        out = self.work / f"run-{self.counter:02d}-{system}.json"
        full = {
            "system": system,
            "database_url": url,
            "storage_dir": str(storage),
            "out": str(out),
            "dims": a.dims,
            "model": a.model,
            "send_dimensions": a.dims != self.native_dims,
            "parser_url": self.infra.parser.base_url,
            "embedder_url": self.infra.embedder.base_url + "/v1",
            "api_key": LOCAL_MOCK_API_KEY,
            "maintenance_work_mem": a.maintenance_work_mem,
            "parallel_workers": a.parallel_workers,
            **spec,
        }
        spec_path = out.with_suffix(".spec.json")
        spec_path.write_text(json.dumps(full))
        self.infra.reset_mocks(parser_latency_ms, embedder_latency_ms)
        postmaster = self.infra.postgres_pids()[:1]
        mocks = {"parser": [self.infra.parser.proc.pid], "embedder": [self.infra.embedder.proc.pid]}
        cpu0 = {k: _cpu(v) for k, v in mocks.items()}
        pg0 = _cpu(postmaster, with_children=True)
        log = out.with_suffix(".log")
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", str(spec_path)],
                cwd=REPO_ROOT,
                env=env or self._env(url, storage),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            with RssSampler(proc.pid) as rss:
                try:
                    proc.wait(timeout=a.run_timeout)
                except subprocess.TimeoutExpired:
                    from benchmarks.infra import stop_group

                    stop_group(proc)
                    raise RuntimeError(f"{system} run timed out; log: {log}") from None
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"{system} run failed ({proc.returncode}):\n{log.read_text()[-4000:]}"
            )
        result = json.loads(out.read_text())
        calls = self.infra.mock_calls()
        seconds = round(result["seconds"], 4)
        result.update(
            system=system,
            seconds=seconds,
            docs_per_s=_rate(result["documents"], seconds),
            chunks_per_s=_rate(result["chunks"], seconds),
            vectors_per_s=_rate(result["vectors"], seconds),
            peak_rss_mb=round(max(rss.peak / 2**20, result.get("peak_rss_mb_self", 0)), 1),
            cpu_seconds={
                "pipeline": result.pop("cpu_seconds", None),
                **{k: round(_cpu(v) - cpu0[k], 2) for k, v in mocks.items()},
                "postgres": round(_cpu(postmaster, with_children=True) - pg0, 2),
            },
            **calls,
        )
        return result

    def storage_with(self, name: str, spec: corpus_mod.CorpusSpec) -> tuple[Path, dict]:
        root = self.work / name
        if root.exists():
            shutil.rmtree(root)
        files = corpus_mod.generate(spec, root)
        return root, corpus_mod.summary(files)

    def corpus_spec(self, **overrides: Any) -> corpus_mod.CorpusSpec:
        a = self.args
        spec = corpus_mod.CorpusSpec(
            docs=a.docs, seed=a.seed, mean_chars=a.mean_chars, sigma=a.sigma, mix=a.mix
        )
        return replace(spec, **overrides)

    def index_off(self, url: str) -> None:
        """No HNSW index for this database's vector space: exact search only."""
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO upload_pipeline.vector_spaces (embedding_model, dims, index_name)
                   VALUES (%s, %s, %s) ON CONFLICT DO NOTHING""",
                (self.args.model, self.args.dims, f"document_chunks_hnsw_bench_{self.args.dims}"),
            )
            for (name,) in conn.execute(
                "SELECT index_name FROM upload_pipeline.vector_spaces"
                " WHERE embedding_model = %s AND dims = %s",
                (self.args.model, self.args.dims),
            ).fetchall():
                conn.execute(f'DROP INDEX IF EXISTS upload_pipeline."{name}"')
            has_state = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = 'upload_pipeline'"
                " AND table_name = 'vector_spaces' AND column_name = 'index_state'"
            ).fetchone()
            if has_state:
                conn.execute(
                    "UPDATE upload_pipeline.vector_spaces SET index_state = 'off'"
                    " WHERE embedding_model = %s AND dims = %s",
                    (self.args.model, self.args.dims),
                )

    # --- scenarios ---------------------------------------------------------------------------
    def overhead(self) -> None:
        storage, summary = self.main_corpus()
        bases, docs = [], []
        for _ in range(self.args.repeat):  # alternating, the median run of each is reported
            base_url = self.infra.new_database("overhead_base")
            bases.append(self.run("baseline", url=base_url, storage=storage, index="none"))
            if not self.texts:
                with psycopg.connect(base_url) as conn:
                    self.texts = [
                        r[0]
                        for r in conn.execute(
                            "SELECT content FROM bench_baseline.chunks"
                            " ORDER BY storage_key, chunk_index"
                        )
                    ]
            self.infra.drop_database(base_url)
            url = self.infra.new_database("overhead")
            self.index_off(url)
            docs.append(self.run("docpipe", url=url, storage=storage))
            self.infra.drop_database(url)
        base, doc = _median_run(bases), _median_run(docs)
        self.results["overhead"] = {
            "description": "zero-latency mocks, no HNSW index: the pipeline's own overhead",
            "repeats": {
                "baseline_seconds": [r["seconds"] for r in bases],
                "docpipe_seconds": [r["seconds"] for r in docs],
            },
            "corpus": summary,
            "baseline": base,
            "docpipe": doc,
            "docpipe_vs_baseline": _ratio(doc["vectors_per_s"], base["vectors_per_s"]),
            "docpipe_vs_limit": _ratio(doc["vectors_per_s"], self.limit("copy_rows_per_s")),
            "limit_used": "copy_rows_per_s (COPY, no index)",
        }

    def main_corpus(self) -> tuple[Path, dict]:
        if not hasattr(self, "_main"):
            self._main = self.storage_with("corpus-main", self.corpus_spec())
        return self._main

    def limit(self, name: str, variant: str | None = None) -> float | None:
        probe = self.limits.get(variant or f"vector_{self.args.dims}")
        return probe.get(name) if probe else None

    def corpus_texts(self) -> list[str]:
        """The chunk texts the pipeline embeds (from the baseline's table when it ran)."""
        if self.texts:
            return self.texts
        import re as _re

        from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks

        storage, _ = self.main_corpus()
        texts: list[str] = []
        for path in sorted(storage.rglob("*")):
            if path.suffix in (".md", ".txt", ".html"):
                text = path.read_text()
                if path.suffix == ".html":
                    text = _re.sub(r"<[^>]+>", "\n\n", text)
                texts += [c.text for c in split_into_chunks(text, ChunkingConfig())]
        self.texts = texts
        return texts

    def probes(self) -> None:
        from benchmarks.probes import probe_variant
        from mocks.openai.app import embed_text

        a = self.args
        texts = self.corpus_texts()
        rows = max(len(texts), 50)
        texts = (texts * (rows // max(len(texts), 1) + 1))[:rows]
        variants = [("vector", a.dims)]
        if a.dims <= 4000:
            variants.append(("halfvec", a.dims))
        if a.reduced_dims and a.reduced_dims < a.dims:
            variants.append(("vector", a.reduced_dims))
        url = self.infra.new_database("probes")
        cache: dict[int, list[list[float]]] = {}
        for vector_type, dims in variants:
            if vector_type == "vector" and dims > 2000:
                continue  # HNSW indexes `vector` up to 2,000 dimensions
            if dims not in cache:
                cache[dims] = [embed_text(t, dims, a.model) for t in texts]
            self.limits[f"{vector_type}_{dims}"] = probe_variant(
                url,
                cache[dims],
                dims=dims,
                vector_type=vector_type,
                insert_rows=a.probe_insert_rows,
                maintenance_work_mem=a.maintenance_work_mem,
                parallel_workers=a.parallel_workers,
            )
            print(
                f"  limits {vector_type}({dims}): {_probe_line(self.limits[f'{vector_type}_{dims}'])}"
            )
        if a.random_probe_rows:
            import random

            rnd = random.Random(1)
            n = min(a.random_probe_rows, rows)
            dense = [[rnd.gauss(0.0, 1.0) for _ in range(a.dims)] for _ in range(n)]
            vtype = "vector" if a.dims <= 2000 else "halfvec"
            probe = probe_variant(
                url,
                dense,
                dims=a.dims,
                vector_type=vtype,
                insert_rows=a.probe_insert_rows,
                maintenance_work_mem=a.maintenance_work_mem,
                parallel_workers=a.parallel_workers,
            )
            probe["note"] = "random dense vectors (like real embeddings), for reference only"
            self.limits[f"random_dense_{vtype}_{a.dims}"] = probe
            print(f"  limits random dense {vtype}({a.dims}): {_probe_line(probe)}")
        self.infra.drop_database(url)
        cache.clear()  # ~0.5 GB of Python floats at the defaults: not to be kept around
        if not self.limits:
            return
        # ratios for scenarios measured before the probes
        if "overhead" in self.results:
            o = self.results["overhead"]
            o["docpipe_vs_limit"] = _ratio(
                o["docpipe"]["vectors_per_s"], self.limit("copy_rows_per_s")
            )

    def realistic(self) -> None:
        a = self.args
        storage, summary = self.main_corpus()
        base_url = self.infra.new_database("realistic_base")
        lat = {
            "parser_latency_ms": a.parser_latency_ms,
            "embedder_latency_ms": a.embedder_latency_ms,
        }
        base = self.run("baseline", url=base_url, storage=storage, index="build", **lat)
        self.infra.drop_database(base_url)
        url = self.infra.new_database("realistic")
        doc = self.run("docpipe", url=url, storage=storage, **lat)
        self.infra.drop_database(url)
        self.results["realistic"] = {
            "description": (
                f"parser {a.parser_latency_ms:g} ms per request (upload, status, result: "
                f"~{3 * a.parser_latency_ms:g} ms a document), embedder {a.embedder_latency_ms:g} ms "
                "a request; HNSW index as in production (baseline: COPY then build)"
            ),
            "corpus": summary,
            "baseline": base,
            "docpipe": doc,
            "docpipe_vs_baseline": _ratio(doc["vectors_per_s"], base["vectors_per_s"]),
            "docpipe_vs_limit": _ratio(doc["vectors_per_s"], self.limit("load_build_rows_per_s")),
            "limit_used": "load_build_rows_per_s",
        }

    def bulk(self) -> None:
        storage, summary = self.main_corpus()
        base_url = self.infra.new_database("bulk_base")
        base = self.run("baseline", url=base_url, storage=storage, index="build")
        self.bulk_base_url = base_url  # kept for the trickle scenario
        url = self.infra.new_database("bulk")
        doc = self.run("docpipe", url=url, storage=storage)
        self.bulk_url = url  # kept for the re-run and trickle scenarios
        commit_s = doc.get("stage_seconds", {}).get("searchable_chunks")
        limit = self.limit("load_build_rows_per_s")
        self.results["bulk"] = {
            "description": "first load into an empty vector space with its HNSW index, zero-latency mocks",
            "corpus": summary,
            "baseline": base,
            "docpipe": doc,
            "docpipe_vs_baseline": _ratio(doc["vectors_per_s"], base["vectors_per_s"]),
            "docpipe_vs_limit": _ratio(doc["vectors_per_s"], limit),
            "limit_used": "load_build_rows_per_s (COPY + CREATE INDEX after load)",
            "commit_stage_vectors_per_s": _rate(doc["vectors"], commit_s) if commit_s else None,
            "commit_stage_vs_limit": _ratio(_rate(doc["vectors"], commit_s), limit)
            if commit_s
            else None,
        }

    def options(self) -> None:
        """The effect of the user options on the bulk first load (docpipe only)."""
        a = self.args
        storage, _ = self.main_corpus()
        out: dict[str, Any] = {}
        variants: list[tuple[str, dict[str, str], str | None]] = []
        if a.reduced_dims and a.reduced_dims < a.dims:
            variants.append(
                (
                    f"dimensions_{a.reduced_dims}",
                    {"DOCPIPE_EMBEDDING_DIMENSIONS": str(a.reduced_dims)},
                    f"vector_{a.reduced_dims}",
                )
            )
        variants.append(("halfvec", {"DOCPIPE_VECTOR_TYPE": "halfvec"}, f"halfvec_{a.dims}"))
        if not a.quick:
            variants.append(("bulk_mode_off", {"DOCPIPE_INDEX_BULK_THRESHOLD": "inf"}, None))
        for name, extra, variant in variants:
            url = self.infra.new_database(f"opt_{name}")
            env = self._env(url, storage, **extra)
            doc = self.run("docpipe", url=url, storage=storage, env=env)
            self.infra.drop_database(url)
            limit_name = "insert_rows_per_s" if name == "bulk_mode_off" else "load_build_rows_per_s"
            limit = self.limit(limit_name, variant)
            out[name] = {
                "env": extra,
                "docpipe": doc,
                "docpipe_vs_limit": _ratio(doc["vectors_per_s"], limit),
                "limit_used": f"{variant or f'vector_{a.dims}'}.{limit_name}",
                "vs_default_bulk": _ratio(
                    doc["vectors_per_s"],
                    self.results.get("bulk", {}).get("docpipe", {}).get("vectors_per_s"),
                ),
            }
            if name == "bulk_mode_off":
                out[name]["limit_used"] = f"vector_{a.dims}.insert_rows_per_s"
                out[name]["docpipe_vs_limit"] = _ratio(
                    doc["vectors_per_s"], self.limit("insert_rows_per_s")
                )
        self.results["options"] = {
            "description": "bulk first load with each user option (same corpus, fresh database)",
            **out,
        }

    def ensure_bulk(self) -> None:
        if not hasattr(self, "bulk_url"):
            self.bulk()

    def rerun(self) -> None:
        self.ensure_bulk()
        storage, _ = self.main_corpus()
        first = self.results["bulk"]["docpipe"]
        again = self.run("docpipe", url=self.bulk_url, storage=storage)
        remat = self.run("docpipe", url=self.bulk_url, storage=storage, mode="rematerialize")
        calls = lambda r: r["parser_requests"] + r["embedder_requests"]  # noqa: E731
        self.results["rerun"] = {
            "description": (
                "the unchanged corpus again: `ingest` (intake finds nothing new) and a forced "
                "re-materialization of every batch partition (every stage skips)"
            ),
            "first_run_seconds": first["seconds"],
            "docpipe": again,
            "rematerialize": remat,
            "external_calls": calls(again),
            "rematerialize_external_calls": calls(remat),
            "fraction_of_first_run": _ratio(again["seconds"], first["seconds"]),
            "rematerialize_fraction_of_first_run": _ratio(remat["seconds"], first["seconds"]),
            "rows_unchanged": again["rows_unchanged"] and remat["rows_unchanged"],
        }

    def trickle(self) -> None:
        a = self.args
        self.ensure_bulk()
        staging = self.work / "trickle"
        if staging.exists():
            shutil.rmtree(staging)
        summaries = []
        for g in range(a.trickle_batches):
            spec = self.corpus_spec(
                docs=a.trickle_docs, prefix=f"trickle{g:02d}", seed=a.seed + 1 + g
            )
            summaries.append(corpus_mod.summary(corpus_mod.generate(spec, staging / f"g{g:02d}")))
        storage, _ = self.main_corpus()
        indexed_before = self._rows(self.bulk_url)
        doc = self.run(
            "docpipe", url=self.bulk_url, storage=storage, mode="trickle", trickle_dir=str(staging)
        )
        # the baseline appends the same groups to its own indexed table
        base_runs = [
            self.run("baseline", url=self.bulk_base_url, storage=group, index="existing")
            for group in sorted(p for p in staging.iterdir() if p.is_dir())
        ]
        base = _sum_runs(base_runs)
        commit_s = doc.get("stage_seconds", {}).get("searchable_chunks")
        limit = self.limit("insert_rows_per_s")
        self.results["trickle"] = {
            "description": (
                f"{a.trickle_batches} batches of {a.trickle_docs} new documents, one "
                f"`ingest` each, into the vector space's existing HNSW index ({indexed_before} rows)"
            ),
            "corpus": {
                "batches": a.trickle_batches,
                "documents_per_batch": a.trickle_docs,
                "documents": sum(s["documents"] for s in summaries),
            },
            "baseline": base,
            "docpipe": doc,
            "docpipe_vs_baseline": _ratio(doc["vectors_per_s"], base["vectors_per_s"]),
            "docpipe_vs_limit": _ratio(doc["vectors_per_s"], limit),
            "limit_used": "insert_rows_per_s (one client)",
            "commit_stage_vectors_per_s": _rate(doc["vectors"], commit_s) if commit_s else None,
            "commit_stage_vs_limit": _ratio(_rate(doc["vectors"], commit_s), limit)
            if commit_s
            else None,
        }

    def _rows(self, url: str) -> int:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT count(*) FROM upload_pipeline.document_chunks").fetchone()[
                0
            ]

    def memory(self) -> None:
        a = self.args
        out: dict[str, Any] = {}
        for label, docs in (("small", a.memory_docs), ("large", a.memory_docs * 10)):
            spec = self.corpus_spec(docs=docs, mean_chars=a.memory_mean_chars, prefix=f"mem{label}")
            storage, summary = self.storage_with(f"corpus-mem-{label}", spec)
            url = self.infra.new_database(f"mem_{label}")
            self.index_off(url)
            doc = self.run("docpipe", url=url, storage=storage)
            self.infra.drop_database(url)
            shutil.rmtree(storage)
            out[label] = {"corpus": summary, "docpipe": doc}
        self.results["memory"] = {
            "description": (
                "peak RSS of the pipeline process (psutil, sampled every 50 ms, and ru_maxrss) "
                f"ingesting {a.memory_docs} vs {a.memory_docs * 10} documents "
                f"(~{a.memory_mean_chars} chars each), zero latency, no index"
            ),
            **out,
            "rss_ratio": _ratio(
                out["large"]["docpipe"]["peak_rss_mb"], out["small"]["docpipe"]["peak_rss_mb"]
            ),
        }

    def dev(self) -> None:
        from benchmarks.devlatency import measure

        a = self.args
        res = measure(
            self.work,
            files=a.dev_files,
            dims=a.dims if a.dims != self.native_dims else None,
            settle_seconds=a.dev_settle_seconds,
            sensor_interval=a.dev_sensor_interval,
        )
        res["description"] = (
            "`docpipe dev` (daemon + sensor + one run per batch): time from a file written into "
            "storage to its chunks being searchable, files dropped one at a time"
        )
        if a.dev_tuned:
            tuned_dir = self.work / "dev-tuned"
            tuned_dir.mkdir(exist_ok=True)
            res["tuned"] = measure(
                tuned_dir,
                files=a.dev_files,
                dims=a.dims if a.dims != self.native_dims else None,
                settle_seconds=0.5,
                sensor_interval=1,
            )
        self.results["dev"] = res

    def peers(self) -> None:
        """LangChain's index() and LlamaIndex's IngestionPipeline beside `docpipe ingest
        --wait` at --docs (text/markdown/HTML only); see benchmarks/peers/."""
        from benchmarks.peers.bench import measure, peers_available

        missing = peers_available()
        if missing:
            raise RuntimeError(missing)
        a = self.args
        mix = ",".join(part for part in a.mix.split(",") if not part.startswith("pdf"))
        self.results["peers"] = measure(
            self.infra,
            [a.docs],
            ("docpipe", "langchain", "llamaindex"),
            dims=a.dims,
            model=a.model,
            native_dims=self.native_dims,
            seed=a.seed,
            mean_chars=a.mean_chars,
            sigma=a.sigma,
            mix=mix,
        )


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _sum_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {}
    total = {k: sum(r[k] for r in runs) for k in ("seconds", "documents", "chunks", "vectors")}
    for k in ("parser_requests", "parser_uploads", "embedder_requests"):
        total[k] = sum(r.get(k, 0) for r in runs)
    total["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    total["seconds"] = round(total["seconds"], 4)
    total["docs_per_s"] = _rate(total["documents"], total["seconds"])
    total["chunks_per_s"] = _rate(total["chunks"], total["seconds"])
    total["vectors_per_s"] = _rate(total["vectors"], total["seconds"])
    total["runs"] = len(runs)
    total["system"] = runs[0].get("system")
    return total


def _probe_line(p: dict[str, Any]) -> str:
    return (
        f"COPY {p['copy_rows_per_s']:.0f} rows/s, build {p['build_rows_per_s']:.0f} rows/s "
        f"(load+build {p['load_build_rows_per_s']:.0f}), insert {p['insert_rows_per_s']:.0f} rows/s "
        f"({p['insert_rows_per_s_2_clients']:.0f} with 2 clients)"
    )


# --- targets and the table ------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None, detail: str = "") -> None:
        rows.append(
            {
                "scenario": name,
                "target": TARGETS[name],
                "value": value,
                "goal": goal,
                "met": met,
                "detail": detail,
            }
        )

    s = results
    if "overhead" in s:
        v = s["overhead"]["docpipe_vs_baseline"]
        add("overhead", v, ">= 0.8", v is not None and v >= 0.8, "docpipe/baseline vectors/s")
    for name in ("bulk", "trickle"):
        if name in s:
            v = s[name]["docpipe_vs_limit"]
            add(
                name,
                v,
                ">= 0.85",
                v is not None and v >= 0.85,
                f"end to end; commit stage alone: {s[name].get('commit_stage_vs_limit')} x limit",
            )
    if "rerun" in s:
        r = s["rerun"]
        ok = r["external_calls"] == 0 and (r["fraction_of_first_run"] or 1) <= 0.03
        add(
            "rerun",
            {"external_calls": r["external_calls"], "fraction": r["fraction_of_first_run"]},
            "0 calls, <= 0.03",
            ok,
            f"forced re-materialization: {r['rematerialize_external_calls']} calls, "
            f"{r['rematerialize_fraction_of_first_run']} of the first run; rows unchanged: "
            f"{r['rows_unchanged']}",
        )
    if "memory" in s:
        v = s["memory"]["rss_ratio"]
        add(
            "memory",
            v,
            "<= 1.3",
            v is not None and v <= 1.3,
            f"{s['memory']['small']['docpipe']['peak_rss_mb']} MB vs "
            f"{s['memory']['large']['docpipe']['peak_rss_mb']} MB",
        )
    if "dev" in s and "p50_seconds" in s["dev"]:
        d = s["dev"]
        v = d["p50_seconds"]
        detail = f"defaults; median parts: {d.get('median_parts_seconds')}"
        if "tuned" in d:
            t = d["tuned"]
            detail += (
                f"; settle 0.5 s + sensor 1 s: p50 {t['p50_seconds']}, p95 {t['p95_seconds']}, "
                f"parts {t.get('median_parts_seconds')}"
            )
        add("dev", {"p50": v, "p95": d["p95_seconds"]}, "p50 <= 10 s", v <= 10, detail)
    for docs, size in s.get("peers", {}).get("sizes", {}).items():
        r = size["ratios"]
        first = r.get("first_vs_faster_peer_excl_imports") or {}
        v = first.get("ratio")
        add(
            "peers",
            v,
            ">= 2.0",
            v is not None and v >= 2.0,
            f"{docs} docs, vs {first.get('peer')} excl. its imports; re-run "
            f"{r.get('rerun_docpipe_whole_seconds')} s vs LlamaIndex "
            f"{r.get('rerun_llamaindex_excl_imports_seconds')} s (met: {r.get('rerun_met')})",
        )
    return rows


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []

    def add(scenario: str, run: dict[str, Any] | None, vs_base=None, vs_limit=None) -> None:
        if not run:
            return
        rows.append(
            {
                "scenario": scenario,
                "system": run.get("system", "docpipe"),
                "docs": run.get("documents"),
                "chunks": run.get("chunks"),
                "seconds": run.get("seconds"),
                "docs_per_s": run.get("docs_per_s"),
                "chunks_per_s": run.get("chunks_per_s"),
                "vectors_per_s": run.get("vectors_per_s"),
                "peak_rss_mb": run.get("peak_rss_mb"),
                "parser_calls": run.get("parser_requests"),
                "embedder_calls": run.get("embedder_requests"),
                "vs_baseline": vs_base,
                "vs_limit": vs_limit,
            }
        )

    for name in ("overhead", "realistic", "bulk", "trickle"):
        if name in results:
            r = results[name]
            add(name, r.get("baseline"))
            add(name, r.get("docpipe"), r.get("docpipe_vs_baseline"), r.get("docpipe_vs_limit"))
    for name, r in results.get("options", {}).items():
        if isinstance(r, dict) and "docpipe" in r:
            add(f"bulk/{name}", r["docpipe"], None, r.get("docpipe_vs_limit"))
    if "rerun" in results:
        r = results["rerun"]
        add("rerun (ingest)", r["docpipe"], None, None)
        add("rerun (materialize)", r["rematerialize"], None, None)
    if "memory" in results:
        for label in ("small", "large"):
            add(f"memory/{label}", results["memory"][label]["docpipe"], None, None)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def render_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[_fmt(r.get(key)) for key, _ in columns] for r in rows]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
        for i, (_, h) in enumerate(columns)
    ]
    line = "| " + " | ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([line, sep, *body])


RUN_COLUMNS = [
    ("scenario", "scenario"),
    ("system", "system"),
    ("docs", "docs"),
    ("chunks", "chunks"),
    ("seconds", "s"),
    ("docs_per_s", "docs/s"),
    ("chunks_per_s", "chunks/s"),
    ("vectors_per_s", "vectors/s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("parser_calls", "parser calls"),
    ("embedder_calls", "embedder calls"),
    ("vs_baseline", "docpipe/baseline"),
    ("vs_limit", "docpipe/limit"),
]
TARGET_COLUMNS = [
    ("scenario", "scenario"),
    ("value", "value"),
    ("goal", "goal"),
    ("met", "met"),
    ("detail", "detail"),
]
LIMIT_COLUMNS = [
    ("variant", "variant"),
    ("load_rows", "rows"),
    ("copy_rows_per_s", "COPY rows/s"),
    ("build_rows_per_s", "HNSW build rows/s"),
    ("load_build_rows_per_s", "load+build rows/s"),
    ("insert_rows_per_s", "HNSW insert rows/s"),
    ("insert_rows_per_s_2_clients", "insert, 2 clients"),
    ("index_mb", "index MB"),
]


def report(doc: dict[str, Any]) -> str:
    out = []
    if doc["limits"]:
        out.append("pgvector limits (this machine, the corpus's vectors):")
        out.append(
            render_table([{"variant": k, **v} for k, v in doc["limits"].items()], LIMIT_COLUMNS)
        )
        out.append("")
    out.append("runs:")
    out.append(render_table(doc["table"], RUN_COLUMNS))
    out.append("")
    if "dev" in doc["scenarios"] and "p50_seconds" in doc["scenarios"]["dev"]:
        d = doc["scenarios"]["dev"]
        out.append(
            f"upload -> searchable under docpipe dev ({d['files']} files): p50 {d['p50_seconds']} s, "
            f"p95 {d['p95_seconds']} s; median parts {d.get('median_parts_seconds')}"
        )
        if "tuned" in d:
            t = d["tuned"]
            out.append(
                "  with DOCPIPE_SETTLE_SECONDS=0.5 DOCPIPE_SENSOR_INTERVAL_SECONDS=1: "
                f"p50 {t['p50_seconds']} s, p95 {t['p95_seconds']} s; "
                f"median parts {t.get('median_parts_seconds')}"
            )
        out.append("")
    if "peers" in doc["scenarios"]:
        from benchmarks.peers.bench import render as render_peers

        out.append("peers (whole process vs excluding imports):")
        out.append(render_peers(doc["scenarios"]["peers"]["table"]))
        out.append("")
    out.append("targets:")
    out.append(render_table(doc["targets"], TARGET_COLUMNS))
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--docs", type=int, default=None, help="documents in the main corpus (1000; --quick 150)"
    )
    p.add_argument("--dims", type=int, default=1536)
    p.add_argument("--model", default="text-embedding-3-small")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mean-chars", type=int, default=10_000, help="mean document size (log-normal)")
    p.add_argument("--sigma", type=float, default=0.6, help="log-normal sigma of document sizes")
    p.add_argument(
        "--mix",
        default=corpus_mod.DEFAULT_MIX,
        help="formats and weights, e.g. md:5,txt:2,html:2,pdf:1",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma list of {', '.join(SCENARIOS)} (peers is opt-in)",
    )
    p.add_argument("--skip", default="", help="comma list of scenarios to leave out")
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (a few minutes)")
    p.add_argument(
        "--parser-latency-ms", type=float, default=100.0, help="per parser request (3 a document)"
    )
    p.add_argument("--embedder-latency-ms", type=float, default=50.0, help="per embeddings request")
    p.add_argument(
        "--maintenance-work-mem", default="1GB", help="cap for HNSW builds (docpipe and probes)"
    )
    p.add_argument(
        "--parallel-workers", type=int, default=max(0, min(2, (os.cpu_count() or 1) - 1))
    )
    p.add_argument(
        "--reduced-dims", type=int, default=512, help="the `dimensions` option measured (0: skip)"
    )
    p.add_argument("--probe-insert-rows", type=int, default=None)
    p.add_argument(
        "--random-probe-rows", type=int, default=None, help="random dense vectors probe (0: skip)"
    )
    p.add_argument("--trickle-batches", type=int, default=None)
    p.add_argument("--trickle-docs", type=int, default=None)
    p.add_argument(
        "--memory-docs", type=int, default=None, help="N of the N vs 10 N memory scenario"
    )
    p.add_argument("--memory-mean-chars", type=int, default=2000)
    p.add_argument("--dev-files", type=int, default=None)
    p.add_argument("--dev-settle-seconds", type=float, default=None, help="default: docpipe's (2)")
    p.add_argument("--dev-sensor-interval", type=int, default=None, help="default: docpipe's (3)")
    p.add_argument(
        "--dev-tuned",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure with DOCPIPE_SETTLE_SECONDS=0.5 DOCPIPE_SENSOR_INTERVAL_SECONDS=1 "
        "(default: on, off with --quick)",
    )
    p.add_argument("--database-url", default=os.environ.get("DOCPIPE_DATABASE_URL") or None)
    p.add_argument(
        "--workdir", default=None, help="keep everything here (default: a temp dir, removed)"
    )
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "ingest.json"))
    p.add_argument(
        "--repeat", type=int, default=None, help="overhead runs per system (3; --quick 1)"
    )
    p.add_argument("--run-timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    q = args.quick
    defaults = {
        "docs": 150 if q else 1000,
        "probe_insert_rows": 100 if q else 400,
        "random_probe_rows": 0 if q else 5000,
        "trickle_batches": 3 if q else 5,
        "trickle_docs": 10 if q else 20,
        "memory_docs": 100 if q else 1000,
        "dev_files": 5 if q else 10,
        "repeat": 1 if q else 3,
        "dev_tuned": not q,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = (set(chosen) | skipped) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {sorted(unknown)}")
    args.selected = [s for s in SCENARIOS if s in chosen and s not in skipped]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    command = "python -m benchmarks.ingest " + " ".join(argv if argv is not None else sys.argv[1:])
    workdir = Path(args.workdir) if args.workdir else None
    doc: dict[str, Any] = {
        "command": command.strip(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("database_url",)},
        "database": "external (DOCPIPE_DATABASE_URL)"
        if args.database_url
        else "embedded (temp DOCPIPE_HOME)",
        "scenarios": {},
        "limits": {},
        "skipped": {},
    }
    with Infra(workdir, args.database_url) as infra:
        with psycopg.connect(infra.server_url) as conn:
            doc["machine"]["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        with psycopg.connect(infra.new_database("version")) as conn:
            doc["machine"]["pgvector"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
        doc["processes"] = {  # so a caller can check that nothing was left running
            "parser_mock": infra.parser.proc.pid,
            "embedder_mock": infra.embedder.proc.pid,
            "postgres": infra.postgres_pids()[:1],
        }
        bench = Bench(args, infra)
        order = [s for s in SCENARIOS if s in args.selected]
        for name in order:
            t = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                getattr(bench, "probes" if name == "limits" else name)()
            except Exception as exc:  # one scenario's failure is reported, the rest still run
                doc["skipped"][name] = f"failed: {exc.__class__.__name__}: {exc}"[:2000]
                print(f"   {name} FAILED: {exc}", flush=True)
            print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
        for name in SCENARIOS:
            if name not in args.selected:
                doc["skipped"].setdefault(name, "not selected")
        doc["scenarios"] = bench.results
        doc["limits"] = bench.limits
    doc["targets"] = evaluate_targets(doc["scenarios"])
    doc["table"] = table_rows(doc["scenarios"])
    doc["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print()
    print(report(doc))
    print(f"\nwrote {out} ({doc['seconds']} s in all)")
    return 1 if any(v.startswith("failed") for v in doc["skipped"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
