"""docpipe beside LangChain's indexing API and LlamaIndex's IngestionPipeline.

For each corpus size: a text/markdown/HTML corpus (benchmarks.corpus), and for each system a
fresh database on the benchmark's Postgres, a first run and an unchanged re-run, each a fresh
process against the same OpenAI-contract embedder mock (and, for docpipe, the parser mock):

- docpipe: `docpipe ingest <folder> --wait`, the whole command as a user runs it, with its
  defaults (DOCPIPE_PARSE_LOCALLY=text: markdown, text and HTML parsed in-process);
- docpipe_local: the same command with every format of this corpus named for in-process
  parsing (DOCPIPE_PARSE_LOCALLY), which is what the peers do: the like-for-like comparison;
- langchain: benchmarks/peers/langchain_run.py (`index()` + SQLRecordManager + PGVector);
- llamaindex: benchmarks/peers/llamaindex_run.py (IngestionPipeline + docstore + PGVectorStore);

each with a zero-latency embedder and a realistic one, and each peer at its own usual
splitter and at docpipe's chunk size: every variant is reported (benchmarks/peers/variants.py
holds them, the targets, the ratios and the table).

Each run records the whole process's wall time (interpreter start-up and imports included),
the peers' own time without their imports, the mocks' request counts, the searchable rows and
the rows the run inserted, updated or deleted in any table (pg_stat_user_tables), so a re-run
that "skips" but rewrites its bookkeeping shows it. `--profile` adds py-spy profiles of docpipe.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks import corpus as corpus_mod
from benchmarks.infra import REPO_ROOT, Infra, RssSampler, child_env, stop_group
from benchmarks.peers.profile import PROFILE_RATE, summarise_profile
from benchmarks.peers.variants import (  # noqa: F401 - re-exported for the scenarios and report
    CHUNKINGS,
    COLUMNS,
    DOCPIPE_SYSTEMS,
    EMBEDDERS,
    FIRST_RUN_TARGET,
    FIRST_RUN_TARGETS,
    JUDGED_ON,
    PEER_MIX,
    PEER_OWN_SPLITTERS,
    RERUN_TARGET_SECONDS,
    SYSTEMS,
    _rate,
    _ratio,
    ratios,
    render,
    table_rows,
)
from benchmarks.peers.venv import (  # noqa: F401 - re-exported
    PEER_PACKAGES,
    PEERS_VENV,
    package_versions,
    peers_available,
    setup_peers_venv,
)
from docpipe_dagster.config import LOCAL_MOCK_API_KEY
from docpipe_dagster.core.chunking import ChunkingConfig
from docpipe_dagster.core.models import MODEL_DIMENSIONS

# Tables each system's searchable chunks live in.
VECTOR_TABLES = {
    "docpipe": "upload_pipeline.document_chunks",
    "docpipe_local": "upload_pipeline.document_chunks",
    "langchain": "public.langchain_pg_embedding",
    "llamaindex": "public.data_bench",
}


# What `docpipe ingest --wait` imports before its first run.
DOCPIPE_IMPORTS = (
    "import docpipe_dagster.cli, docpipe_dagster.cli.ingest, docpipe_dagster.runner,"
    " docpipe_dagster.defs.resources, docpipe_dagster.store.queries"
)


def table_writes(url: str) -> dict[str, int]:
    """Rows inserted + updated + deleted per user table so far (cumulative counters)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del"
            " FROM pg_stat_user_tables"
        ).fetchall()
    return {name: int(n) for name, n in rows}


def count_rows(url: str, table: str) -> int | None:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return None


def hnsw_indexes(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT schemaname || '.' || indexname FROM pg_indexes"
                " WHERE indexdef ILIKE '%USING hnsw%' ORDER BY 1"
            )
        ]


class PeerBench:
    def __init__(
        self,
        infra: Infra,
        *,
        dims: int = 1536,
        model: str = "text-embedding-3-small",
        seed: int = 7,
        mean_chars: int = 10_000,
        sigma: float = 0.6,
        mix: str = PEER_MIX,
        embedders: tuple[str, ...] = tuple(EMBEDDERS),
        chunkings: tuple[str, ...] = CHUNKINGS,
        parser_latency_ms: float = 0.0,
        timeout: float = 1800.0,
        profile: tuple[str, ...] = (),
        peers_python: Path | None = None,
        repeat: int = 1,
    ) -> None:
        self.repeat = max(1, repeat)
        self.infra = infra
        self.peers_python = str(peers_python or PEERS_VENV / "bin" / "python")
        self.work = infra.workdir / "peers"
        self.work.mkdir(parents=True, exist_ok=True)
        self.dims, self.model = dims, model
        self.native_dims = MODEL_DIMENSIONS.get(model)
        self.corpus_args = {"seed": seed, "mean_chars": mean_chars, "sigma": sigma, "mix": mix}
        self.parser_latency_ms = parser_latency_ms
        self.embedders, self.chunkings = embedders, chunkings
        self.timeout = timeout
        self.profile = profile
        self.counter = 0
        chunking = ChunkingConfig()
        self.chunk_size, self.chunk_overlap = chunking.max_chars, chunking.overlap_chars

    def splitter(self, system: str, chunking: str) -> dict[str, Any]:
        """A peer's splitter settings in `chunking` ("own" or "docpipe")."""
        if chunking == "own":
            return dict(PEER_OWN_SPLITTERS[system])
        return {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap, "unit": "chars"}

    # --- one process ---------------------------------------------------------------------
    def _docpipe_env(self, system: str, url: str, storage: Path) -> dict[str, str]:
        env = {
            "DOCPIPE_DATABASE_URL": url,
            "DOCPIPE_DAGSTER_DATABASE_URL": url,  # ingest uses an ephemeral Dagster instance
            "DOCPIPE_HOME": str(self.work / "docpipe-home"),
            "DOCPIPE_STORAGE_BACKEND": "folder",
            "DOCPIPE_STORAGE_DIR": str(storage),
            "LLAMAPARSE_BASE_URL": self.infra.parser.base_url,
            "OPENAI_BASE_URL": self.infra.embedder.base_url + "/v1",
            "LLAMA_CLOUD_API_KEY": LOCAL_MOCK_API_KEY,
            "OPENAI_API_KEY": LOCAL_MOCK_API_KEY,
            "DOCPIPE_EMBEDDING_MODEL": self.model,
            "DOCPIPE_SETTLE_SECONDS": "0",
            **DOCPIPE_SYSTEMS[system],
        }
        if self.dims != self.native_dims:
            env["DOCPIPE_EMBEDDING_DIMENSIONS"] = str(self.dims)
        return child_env(**env)

    def _command(self, system: str, corpus: Path, spec_path: Path) -> list[str]:
        if system in DOCPIPE_SYSTEMS:
            return [str(Path(sys.executable).parent / "docpipe"), "ingest", str(corpus), "--wait"]
        return [self.peers_python, "-m", f"benchmarks.peers.{system}_run", str(spec_path)]

    def run_once(
        self,
        system: str,
        *,
        url: str,
        corpus: Path,
        state: Path,
        label: str,
        embedder: str = "zero_latency",
        chunking: str | None = None,
        profile_to: Path | None = None,
    ) -> dict[str, Any]:
        """One process of `system` over `corpus` with the `embedder` mock (and, for a peer,
        its `chunking`); its figures."""
        self.counter += 1
        base = self.work / f"{self.counter:02d}-{system}-{embedder}-{chunking or 'own'}-{label}"
        splitter = self.splitter(system, chunking or "own") if system not in DOCPIPE_SYSTEMS else {}
        spec = {
            "database_url": url,
            "storage_dir": str(corpus),
            "state_dir": str(state),
            "out": str(base.with_suffix(".json")),
            "model": self.model,
            "dims": self.dims,
            "send_dimensions": self.dims != self.native_dims,
            "embedder_url": self.infra.embedder.base_url + "/v1",
            "api_key": LOCAL_MOCK_API_KEY,
            "chunk_size": splitter.get("chunk_size"),
            "chunk_overlap": splitter.get("chunk_overlap"),
            "chunk_unit": splitter.get("unit"),
        }
        spec_path = base.with_suffix(".spec.json")
        spec_path.write_text(json.dumps(spec))
        cmd = self._command(system, corpus, spec_path)
        if profile_to is not None:
            py_spy = Path(sys.executable).parent / "py-spy"
            cmd = [str(py_spy), "record", "--idle", "--threads", "--nonblocking", "--format"]
            cmd += ["raw", "--rate", str(PROFILE_RATE)]
            cmd += ["-o", str(profile_to), "--", *self._command(system, corpus, spec_path)]
        env = (
            self._docpipe_env(system, url, state / "storage")
            if system in DOCPIPE_SYSTEMS
            else child_env(TOKENIZERS_PARALLELISM="false")
        )
        latency = EMBEDDERS[embedder]
        self.infra.reset_mocks(
            self.parser_latency_ms, latency["latency_ms"], latency["per_input_ms"]
        )
        writes0 = table_writes(url)
        cpu0 = self._cpu()
        log = base.with_suffix(".log")
        with log.open("wb") as log_file:
            t = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            with RssSampler(proc.pid) as rss:
                try:
                    proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    stop_group(proc)
                    raise RuntimeError(f"{system} timed out; log: {log}") from None
            wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{system} failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
        calls = self.infra.mock_calls()
        time.sleep(1.2)  # the run's backends flush their table counters as they exit
        cpu = {k: round(v - cpu0[k], 2) for k, v in self._cpu().items()}
        writes1 = table_writes(url)
        touched = {k: v - writes0.get(k, 0) for k, v in writes1.items() if v != writes0.get(k, 0)}
        result: dict[str, Any] = {
            "system": system,
            "run": label,
            "embedder": embedder,
            "splitter": splitter or "docpipe's ChunkingConfig defaults",
            "wall_seconds": round(wall, 3),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        is_docpipe = system in DOCPIPE_SYSTEMS
        if not is_docpipe:
            inner = json.loads(Path(spec["out"]).read_text())
            inner["seconds"] = round(inner["seconds"], 3)
            result.update(inner)
        result.update(
            peak_rss_mb=round(rss.peak / 2**20, 1),
            cpu_seconds=cpu,
            embedder_requests=calls["embedder_requests"],
            parser_requests=calls["parser_requests"] if is_docpipe else 0,
            external_calls=calls["embedder_requests"]
            + (calls["parser_requests"] if is_docpipe else 0),
            searchable_rows=count_rows(url, VECTOR_TABLES[system]),
            rows_written=sum(touched.values()),
            rows_written_by_table=touched,
            hnsw_indexes=hnsw_indexes(url),
            log=str(log),
        )
        if is_docpipe:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            result["summary"] = tail[0] if tail else ""
            result["documents"] = _completed(url)
        return result

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far: this process's waited-for children (the run), Postgres, the
        mocks. CPU is steadier than wall time on a shared machine."""
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = {"run": kids.ru_utime + kids.ru_stime}
        pg = self.infra.postgres_pids()[:1]
        out["postgres"] = _proc_cpu(pg, with_children=True)
        out["embedder"] = _proc_cpu([self.infra.embedder.proc.pid])
        out["parser"] = _proc_cpu([self.infra.parser.proc.pid])
        return out

    def import_seconds_docpipe(self) -> float:
        """Wall time of a process that only imports what `docpipe ingest --wait` imports
        (interpreter start-up included): docpipe's share of fixed cost, median of 3."""
        times = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", DOCPIPE_IMPORTS], cwd=REPO_ROOT, env=child_env(), check=True
            )
            times.append(time.perf_counter() - t)
        return round(sorted(times)[1], 3)

    # --- one corpus size -----------------------------------------------------------------
    def corpus(self, docs: int) -> tuple[Path, dict[str, Any]]:
        root = self.work / f"corpus-{docs}"
        if root.exists():
            shutil.rmtree(root)
        spec = corpus_mod.CorpusSpec(docs=docs, **self.corpus_args)
        return root, corpus_mod.summary(corpus_mod.generate(spec, root))

    def units(self, systems: tuple[str, ...]) -> list[tuple[str, str | None]]:
        """(system, peer chunking) to run per embedder: docpipe once, each peer per chunking."""
        out: list[tuple[str, str | None]] = []
        for system in systems:
            if system in DOCPIPE_SYSTEMS:
                out.append((system, None))
            else:
                out += [(system, chunking) for chunking in self.chunkings]
        return out

    def size(self, docs: int, systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
        """Every variant (embedder x peer chunking) at `docs` documents."""
        corpus, summary = self.corpus(docs)
        out: dict[str, Any] = {"documents": docs, "corpus": summary, "variants": {}}
        self.warm_up(systems)
        units = self.units(systems)
        pairs: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {
            (e, s, c): [] for e in self.embedders for s, c in units
        }
        for rep in range(self.repeat):  # round-robin, so a busy moment hits every system
            for embedder in self.embedders:
                for system, chunking in units:
                    url = self.infra.new_database(f"peers_{system}")
                    tag = f"{system}-{embedder}-{chunking or 'own'}-{docs}-{rep}"
                    state = _fresh_dir(self.work / f"state-{tag}")
                    kw = {"url": url, "corpus": corpus, "state": state, "embedder": embedder}
                    first = self.run_once(system, label="first", chunking=chunking, **kw)
                    rerun = self.run_once(system, label="rerun", chunking=chunking, **kw)
                    pairs[(embedder, system, chunking)].append({"first": first, "rerun": rerun})
                    how = f" ({chunking} chunks)" if chunking else ""
                    print(
                        f"   {docs} docs, {embedder} embedder, {system}{how}: {_line(first)}"
                        f" | re-run {_line(rerun)}",
                        flush=True,
                    )
                    self.infra.drop_database(url)
        medians: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        for key, runs in pairs.items():
            # the median pair by first-run time (the re-run belongs to its first run's state)
            median = sorted(runs, key=lambda r: r["first"]["wall_seconds"])[len(runs) // 2]
            medians[key] = {
                **median,
                "repeats": {
                    label: [r[label]["wall_seconds"] for r in runs] for label in ("first", "rerun")
                },
            }
        ours = [v for v in DOCPIPE_SYSTEMS if v in systems]
        one = {v: self.one_document(v, corpus) for v in ours}
        fixed = self.import_seconds_docpipe() if ours else 0.0
        profiles = {
            (e, s): self.profile_system(s, docs, corpus, e)
            for e in self.embedders
            for s in systems
            if s in self.profile
        }
        for (_, system, _), runs in medians.items():
            if system in DOCPIPE_SYSTEMS:
                for label in ("first", "rerun"):
                    run = runs[label]
                    run["import_seconds"] = fixed
                    # A run shorter than the import figure (the no-op re-run, which never
                    # imports Dagster) has no import-free time to report.
                    spent = run["wall_seconds"] - fixed
                    run["seconds"] = round(spent, 3) if spent > 0 else None
            for run in (runs["first"], runs["rerun"]):
                n = runs["first"]["documents"]
                run["docs_per_s_whole"] = _rate(n, run["wall_seconds"])
                run["docs_per_s_excl_imports"] = _rate(n, run.get("seconds"))
        for embedder in self.embedders:
            target = FIRST_RUN_TARGETS[embedder]
            for chunking in self.chunkings:
                found: dict[str, Any] = {}
                for system, c in units:
                    if c not in (None, chunking):
                        continue
                    entry = dict(medians[(embedder, system, c)])
                    if system in DOCPIPE_SYSTEMS:
                        entry["one_document"] = one[system]
                    if (embedder, system) in profiles and c in (None, "own"):
                        entry["profile"] = profiles[(embedder, system)]  # a peer's: own splitter
                    found[system] = entry
                out["variants"][f"{embedder}/{chunking}"] = {
                    "embedder": embedder,
                    "embedder_latency": EMBEDDERS[embedder],
                    "peer_chunking": chunking,
                    "peer_splitters": {
                        s: self.splitter(s, chunking) for s in found if s not in DOCPIPE_SYSTEMS
                    },
                    "first_run_target": target,
                    "systems": found,
                    "ratios": {v: ratios(found, v, target) for v in ours},
                }
        return out

    def one_document(self, system: str, corpus: Path) -> dict[str, Any]:
        """docpipe's cost per process: a first load of one file of `corpus` (imports, the
        Dagster instance and definitions, a run's start, the index build, exit)."""
        single = _fresh_dir(self.work / f"corpus-one-{corpus.name}")
        first = min(p for p in corpus.rglob("*") if p.is_file())
        (single / first.relative_to(corpus)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(first, single / first.relative_to(corpus))
        url = self.infra.new_database(f"peers_one_{system}")
        state = _fresh_dir(self.work / f"state-one-{system}")
        run = self.run_once(system, url=url, corpus=single, state=state, label="one")  # 0 latency
        self.infra.drop_database(url)
        return {k: run[k] for k in ("wall_seconds", "documents", "searchable_rows", "cpu_seconds")}

    def warm_up(self, systems: tuple[str, ...]) -> None:
        """Import each system once, untimed, so no measured run pays for a cold page cache or
        a first bytecode compile that the others were spared."""
        for system in dict.fromkeys("docpipe" if s in DOCPIPE_SYSTEMS else s for s in systems):
            if system == "docpipe":
                cmd = [sys.executable, "-c", DOCPIPE_IMPORTS]
            else:
                cmd = [self.peers_python, "-c", f"import benchmarks.peers.{system}_run"]
            subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), check=True)

    def profile_system(
        self, system: str, docs: int, corpus: Path, embedder: str = "zero_latency"
    ) -> dict[str, Any]:
        """py-spy over a first load and a no-op re-run in a database of their own."""
        url = self.infra.new_database("peers_profile")
        state = _fresh_dir(self.work / f"state-profile-{system}-{embedder}-{docs}")
        result = {}
        for label in ("first", "rerun"):
            raw = self.work / f"profile-{system}-{embedder}-{docs}-{label}.txt"
            run = self.run_once(
                system,
                url=url,
                corpus=corpus,
                state=state,
                label=label,
                embedder=embedder,
                profile_to=raw,
            )
            result[label] = {
                "wall_seconds_under_py_spy": run["wall_seconds"],
                "raw": str(raw),
                **summarise_profile(raw),
            }
        self.infra.drop_database(url)
        return result


def _fresh_dir(path: Path) -> Path:
    """`path` as an empty folder (whatever an earlier run left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _proc_cpu(pids: list[int], with_children: bool = False) -> float:
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


def _completed(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT count(*) FROM (SELECT DISTINCT ON (document_id) state
               FROM upload_pipeline.upload_jobs ORDER BY document_id, registered_at DESC) l
               WHERE state = 'completed'"""
        ).fetchone()[0]


def _line(r: dict[str, Any]) -> str:
    own = f", {r['seconds']} s excl. imports" if r.get("seconds") is not None else ""
    return (
        f"{r['wall_seconds']} s whole{own}, {r['external_calls']} calls, "
        f"{r['rows_written']} rows written, {r['searchable_rows']} rows"
    )


def options_from(args: Any, **overrides: Any) -> dict[str, Any]:
    """PeerBench's options from a command's parsed arguments (benchmarks.peers and the peers
    scenario of benchmarks.ingest share these names)."""
    names = ("dims", "model", "seed", "mean_chars", "sigma", "repeat")
    return {**{name: getattr(args, name) for name in names}, **overrides}


def measure(infra: Infra, sizes: list[int], systems: tuple[str, ...], **options: Any) -> dict:
    bench = PeerBench(infra, **options)
    doc: dict[str, Any] = {
        "chunking": {"chunk_size": bench.chunk_size, "chunk_overlap": bench.chunk_overlap},
        "peer_own_splitters": {k: v for k, v in PEER_OWN_SPLITTERS.items() if k in systems},
        "embedders": {k: EMBEDDERS[k] for k in bench.embedders},
        "targets": {
            "first_run_vs_faster_peer": {k: FIRST_RUN_TARGETS[k] for k in bench.embedders},
            "rerun_whole_seconds": RERUN_TARGET_SECONDS,
            "judged_on": JUDGED_ON,
        },
        "model": bench.model,
        "dims": bench.dims,
        "versions": package_versions(Path(bench.peers_python)),
        "sizes": {},
    }
    for docs in sizes:
        doc["sizes"][str(docs)] = bench.size(docs, systems)
    doc["table"] = table_rows(doc)
    return doc
