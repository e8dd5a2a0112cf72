"""The ingest benchmark's scenarios: `Bench` measures each one (see benchmarks/ingest.py)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import psycopg

from benchmarks import corpus as corpus_mod
from benchmarks.infra import REPO_ROOT, Infra, RssSampler, child_env
from benchmarks.peers.bench import (
    PEER_MIX,
    measure,
    options_from,
    peers_available,
    setup_peers_venv,
)
from docpipe_dagster.clients.embeddings import MODEL_DIMENSIONS
from docpipe_dagster.config import LOCAL_MOCK_API_KEY, default_of

# overhead and realistic run the batches as `docpipe ingest --wait` does (DOCPIPE_INGEST_RUNS
# at once); bulk, options and trickle one at a time, so the commit stage's summed seconds are
# its wall time against the limit.
COMMAND_RUNS = default_of("ingest_runs")

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
    "production",
    "peers",
)
TARGETS = {
    "overhead": "docpipe >= 0.8 x direct baseline (vectors/s), zero-latency mocks, no index",
    "realistic": "docpipe >= 0.95 x direct baseline (vectors/s), parser and embedder latency",
    "bulk": "docpipe >= 0.85 x HNSW load+build-after-load limit (vectors/s)",
    "bulk_commit": "the commit stage alone >= 0.85 x HNSW load+build-after-load limit",
    "trickle": "docpipe >= 0.85 x HNSW insert limit (vectors/s, one client)",
    "rerun": "0 external calls and <= 3 % of the first run's time",
    "memory": "peak RSS at 10 N documents <= 1.3 x at N documents",
    "dev": "upload -> searchable p50 <= 10 s under docpipe dev",
    "dev_push": "uploaded through the API under docpipe dev (the push path): upload -> "
    "searchable p50 <= 3 s, p95 <= 5 s",
    "production": "a burst copied into storage under docpipe dev's topology (daemon) >= 0.9 x "
    "`docpipe ingest --wait` on the same corpus, both to the last document searchable; single "
    "files p50 <= 3 s, p95 <= 5 s",
    "production_done": "the same burst >= 0.9 x `docpipe ingest --wait` timed to all work "
    "done: the last run ended (its HNSW index build, its checks) / the command returned",
    "peers_first_realistic": "`docpipe ingest --wait` (whole process) >= 2.0 x the faster of "
    "LangChain index() and LlamaIndex IngestionPipeline (docs/s, their imports excluded), "
    "embedder 100 ms + 1 ms per input a request, each size; peers at their own splitters and "
    "at docpipe's chunk size",
    "peers_first_zero_latency": "`docpipe ingest --wait` (whole process) >= 1.2 x the faster "
    "peer (docs/s, their imports excluded), zero-latency embedder, each size; the target is "
    "set at docpipe's chunk size, the peers' own splitters are held to the same bar",
    "peers_rerun": "unchanged re-run, whole process <= 0.3 s at 1,000 documents (LlamaIndex's "
    "in-process docstore re-run is the figure beside it), 0 external calls, 0 rows written",
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


def _against(
    base: dict[str, Any], doc: dict[str, Any], limit: float | None, limit_used: str
) -> dict[str, Any]:
    """docpipe against the direct baseline and against pgvector's limit."""
    return {
        "baseline": base,
        "docpipe": doc,
        "docpipe_vs_baseline": _ratio(doc["vectors_per_s"], base["vectors_per_s"]),
        "docpipe_vs_limit": _ratio(doc["vectors_per_s"], limit),
        "limit_used": limit_used,
    }


def _commit_stage(
    doc: dict[str, Any],
    limit: float | None,
    commit_s: float | None,
    fulltext_limit: float | None = None,
) -> dict[str, Any]:
    """The commit stage alone (the part the index bounds) against the limit, and against the
    same load with the full-text column and GIN index the schema keeps beside the vectors."""
    rate = _rate(doc["vectors"], commit_s) if commit_s else None
    out = {"commit_stage_vectors_per_s": rate, "commit_stage_vs_limit": _ratio(rate, limit)}
    if fulltext_limit:
        out["commit_stage_vs_fulltext_limit"] = _ratio(rate, fulltext_limit)
    return out


class Bench:
    def __init__(self, args: SimpleNamespace, infra: Infra) -> None:
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
            # md and html go to the parser mock (whose latency the scenarios set), .txt stays
            # in-process: the split these scenarios measure (the default, `text`, keeps all
            # three local).
            "DOCPIPE_PARSE_LOCALLY": "txt,markdown,json",
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
            docs.append(self.run("docpipe", url=url, storage=storage, runs=COMMAND_RUNS))
            self.infra.drop_database(url)
        base, doc = _median_run(bases), _median_run(docs)
        self.results["overhead"] = {
            "description": "zero-latency mocks, no HNSW index: the pipeline's own overhead",
            "repeats": {
                "baseline_seconds": [r["seconds"] for r in bases],
                "docpipe_seconds": [r["seconds"] for r in docs],
            },
            "corpus": summary,
            **_against(
                base, doc, self.limit("copy_rows_per_s"), "copy_rows_per_s (COPY, no index)"
            ),
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
        from docpipe_dagster_mocks.openai.app import embed_text

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
                # the full-text load for the variant the bulk scenario is measured against
                texts=texts if (vector_type, dims) == ("vector", a.dims) else None,
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
        doc = self.run("docpipe", url=url, storage=storage, runs=COMMAND_RUNS, **lat)
        self.infra.drop_database(url)
        self.results["realistic"] = {
            "description": (
                f"parser {a.parser_latency_ms:g} ms per request (upload, status, result: "
                f"~{3 * a.parser_latency_ms:g} ms a document), embedder {a.embedder_latency_ms:g} ms "
                "a request; HNSW index as in production (baseline: COPY then build)"
            ),
            "corpus": summary,
            **_against(base, doc, self.limit("load_build_rows_per_s"), "load_build_rows_per_s"),
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
            **_against(base, doc, limit, "load_build_rows_per_s (COPY + CREATE INDEX after load)"),
            **_commit_stage(doc, limit, commit_s, self.limit("load_build_fulltext_rows_per_s")),
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
            **_against(base, doc, limit, "insert_rows_per_s (one client)"),
            **_commit_stage(doc, limit, commit_s),
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
            paths=("folder", "api"),
        )
        res["description"] = (
            "`docpipe dev` (daemon + sensor + one run per batch): time from a file written into "
            "storage to its chunks being searchable, files dropped one at a time, alternating "
            "with uploads through the API (the push path)"
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

    def production(self) -> None:
        """The production path: a burst under `docpipe dev`'s topology beside `ingest --wait`
        on the same corpus, single-file latency, and 1/2/4 concurrent runs."""
        from benchmarks.production import measure as production

        a = self.args
        work = self.work / "production"
        extra = {}
        if a.dims != self.native_dims:
            extra["DOCPIPE_EMBEDDING_DIMENSIONS"] = str(a.dims)
        self.infra.reset_mocks()
        res = production(
            self.infra,
            work,
            docs=a.production_docs,
            repeat=a.production_repeat,
            latency_files=a.production_latency_files,
            runs=[int(r) for r in str(a.production_runs).split(",") if r.strip()],
            timeout=a.run_timeout,
            extra_env=extra,
        )
        res["description"] = (
            "code server + webserver + daemon with the shipped dagster.yaml and default settings; "
            "the corpus copied into storage at once, timed to the last document settled, beside "
            "`docpipe ingest --wait` on the same corpus (whole process), zero-latency mocks"
        )
        self.results["production"] = res
        shutil.rmtree(work, ignore_errors=True)

    def peers(self) -> None:
        """`docpipe ingest --wait` beside LangChain and LlamaIndex (benchmarks/peers/)."""
        a = self.args
        if peers_available() is not None:
            print("   creating the peers' venv (.venv-peers, once)", flush=True)
            setup_peers_venv()
        missing = peers_available()
        if missing:
            raise RuntimeError(missing)
        sizes = [int(x) for x in str(a.peers_docs).split(",") if x.strip()]
        doc = measure(
            self.infra,
            sizes,
            tuple(s.strip() for s in a.peers_systems.split(",") if s.strip()),
            **options_from(
                a,
                mix=PEER_MIX,
                timeout=a.run_timeout,
                embedders=_names(a.peers_embedders),
                chunkings=_names(a.peers_chunkings),
                profile=_names(a.peers_profile),
            ),
        )
        doc["description"] = (
            "first load and unchanged re-run, each a fresh process, on a text/markdown/HTML "
            f"corpus ({PEER_MIX}), the same embedder mock (zero latency; realistic: 100 ms + "
            "1 ms per input a request) and Postgres; each peer at its own splitter and at "
            "docpipe's chunk size; docpipe's seconds are its whole process, the peers' also "
            "without their imports"
        )
        self.results["peers"] = doc


def _names(raw: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (raw or "").split(",") if x.strip())


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
    fulltext = p.get("load_build_fulltext_rows_per_s")
    return (
        f"COPY {p['copy_rows_per_s']:.0f} rows/s, build {p['build_rows_per_s']:.0f} rows/s "
        f"(load+build {p['load_build_rows_per_s']:.0f}), insert {p['insert_rows_per_s']:.0f} rows/s "
        f"({p['insert_rows_per_s_2_clients']:.0f} with 2 clients)"
        + (f"; load+build with full text {fulltext:.0f} rows/s" if fulltext else "")
    )


# --- targets and the table ------------------------------------------------------------------
