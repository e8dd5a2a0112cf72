"""docpipe beside LangChain's indexing API and LlamaIndex's IngestionPipeline.

For each corpus size: a text/markdown/HTML corpus (benchmarks.corpus), and for each system a
fresh database on the benchmark's Postgres, a first run and an unchanged re-run, each a fresh
process against the same OpenAI-contract embedder mock (and, for docpipe, the parser mock):

- docpipe: `docpipe ingest <folder> --wait`, the whole command as a user runs it, with its
  defaults (DOCPIPE_PARSE_LOCALLY=text: markdown, text and HTML parsed in-process);
- docpipe_local: the same command with every format of this corpus named for in-process
  parsing (DOCPIPE_PARSE_LOCALLY), which is what the peers do: the like-for-like comparison;

each with a zero-latency embedder and a realistic one (EMBEDDERS), and each peer at its own
usual splitter and at docpipe's chunk size (CHUNKINGS): every variant is reported.
- langchain: benchmarks/peers/langchain_run.py (`index()` + SQLRecordManager + PGVector);
- llamaindex: benchmarks/peers/llamaindex_run.py (IngestionPipeline + docstore + PGVectorStore).

Each run records the whole process's wall time (interpreter start-up and imports included),
the peers' own time without their imports, the mocks' request counts, the searchable rows and
the rows the run inserted, updated or deleted in any table (pg_stat_user_tables), so a re-run
that "skips" but rewrites its bookkeeping shows it. `--profile` adds py-spy profiles of docpipe.
"""

from __future__ import annotations

import collections
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
from docpipe_dagster.config import LOCAL_MOCK_API_KEY
from docpipe_dagster.core.chunking import ChunkingConfig
from docpipe_dagster.core.models import MODEL_DIMENSIONS

# docpipe's variants and the environment each adds to the defaults.
DOCPIPE_SYSTEMS: dict[str, dict[str, str]] = {
    "docpipe": {},
    "docpipe_local": {"DOCPIPE_PARSE_LOCALLY": "txt,md,markdown,json,html"},
}
SYSTEMS = (*DOCPIPE_SYSTEMS, "langchain", "llamaindex")
PEERS_VENV = REPO_ROOT / ".venv-peers"
PEER_MIX = "md:5,txt:2,html:2"  # the peers parse no PDF; neither does this comparison
# The embedder mock in each variant: a fixed cost per request and one per input it embeds.
EMBEDDERS: dict[str, dict[str, float]] = {
    "zero_latency": {"latency_ms": 0.0, "per_input_ms": 0.0},
    "realistic": {"latency_ms": 100.0, "per_input_ms": 1.0},
}
# How the peers chunk: "own" is each peer's usual splitter as its docs show it; "docpipe" is
# docpipe's ChunkingConfig defaults (characters). docpipe always chunks with its defaults.
CHUNKINGS = ("own", "docpipe")
PEER_OWN_SPLITTERS: dict[str, dict[str, Any]] = {
    "langchain": {"chunk_size": 2000, "chunk_overlap": 200, "unit": "chars"},
    "llamaindex": {"chunk_size": 512, "chunk_overlap": 50, "unit": "tokens"},  # tiktoken
}
# docpipe's first run (docs/s, whole process) over the faster peer's (excluding its imports).
FIRST_RUN_TARGETS = {"realistic": 2.0, "zero_latency": 1.2}
FIRST_RUN_TARGET = FIRST_RUN_TARGETS["realistic"]
RERUN_TARGET_SECONDS = 0.3  # docpipe's whole no-op process at 1,000 documents
# Which runs each target is judged on (the JSON and the report say so).
JUDGED_ON = {
    "first_realistic": "docpipe's first run, whole process (`docpipe ingest --wait`), against "
    "the faster peer's without its imports, embedder 100 ms + 1 ms per input per request; "
    "every size, with the peers at their own splitters (realistic/own) and at docpipe's "
    "chunk size (realistic/docpipe)",
    "first_zero_latency": "the same with the zero-latency embedder; the target is set for the "
    "peers at docpipe's chunk size (zero_latency/docpipe); zero_latency/own is held to the "
    "same bar for comparison",
    "rerun": "docpipe's unchanged re-run at 1,000 documents (else the largest size), whole "
    "process, 0 embedder or parser calls, 0 rows written; zero_latency is the judged variant "
    "(a no-op makes no call, so the realistic one is a second sample)",
}
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


def _rate(n: float, seconds: float | None) -> float | None:
    return round(n / seconds, 2) if seconds else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


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


def ratios(
    systems: dict[str, Any], variant: str = "docpipe", target: float = FIRST_RUN_TARGET
) -> dict[str, Any]:
    """docpipe (`variant`) against the faster peer (first run, docs/s; `target` the bar),
    its re-run against LlamaIndex's, and whether the re-run meets its target."""
    if variant not in systems:
        return {}
    d = systems[variant]
    peers = {k: v for k, v in systems.items() if k not in DOCPIPE_SYSTEMS}
    out: dict[str, Any] = {}
    for basis in ("whole", "excl_imports"):
        key = f"docs_per_s_{basis}"
        rates = {k: v["first"].get(key) for k, v in peers.items() if v["first"].get(key)}
        if rates:
            best = max(rates, key=rates.get)
            out[f"first_vs_faster_peer_{basis}"] = {
                "peer": best,
                "ratio": _ratio(d["first"]["docs_per_s_whole"], rates[best]),
                "target": f">= {target}",
            }
        for name, v in peers.items():
            out[f"first_vs_{name}_{basis}"] = _ratio(
                d["first"]["docs_per_s_whole"], v["first"].get(key)
            )
    if "llamaindex" in peers:
        li = peers["llamaindex"]["rerun"]
        out["rerun_docpipe_whole_seconds"] = d["rerun"]["wall_seconds"]
        out["rerun_llamaindex_excl_imports_seconds"] = li.get("seconds")
        out["rerun_llamaindex_whole_seconds"] = li["wall_seconds"]
        out["rerun_vs_llamaindex_excl_imports"] = _ratio(
            d["rerun"]["wall_seconds"], li.get("seconds")
        )
    one = d.get("one_document")
    if one:
        # What a process costs whatever its size: the share of the first load it takes.
        out["one_document_seconds"] = one["wall_seconds"]
        out["one_document_share_of_first"] = _ratio(one["wall_seconds"], d["first"]["wall_seconds"])
    out["rerun_met"] = (
        d["rerun"]["wall_seconds"] <= RERUN_TARGET_SECONDS
        and d["rerun"]["external_calls"] == 0
        and d["rerun"]["rows_written"] == 0
    )
    return out


PROFILE_RATE = 100  # samples a second
_IDLE_LEAVES = ("wait", "sleep", "select", "poll", "acquire", "_recv", "recv_into", "accept")


def _idle(leaf: str) -> bool:
    """A leaf frame that is a thread waiting (a pool worker blocked in C shows as `_worker`)."""
    name = leaf.split(" (")[0].rsplit(".", 1)[-1].lower()
    return name in ("_worker", "get", "worker") or any(w in name for w in _IDLE_LEAVES)


def summarise_profile(raw: Path, top: int = 30, rate: int = PROFILE_RATE) -> dict[str, Any]:
    """Seconds per function from py-spy's collapsed stacks (`--idle --threads`).

    The main thread is sampled busy or not, so its inclusive seconds add up to the wall time
    (imports, the runs, waiting on Postgres and the mocks); other threads are counted only
    where their leaf is not a wait.
    """
    if not raw.exists():
        return {"error": "no profile written"}
    lines = raw.read_text(errors="replace").splitlines()
    named = [ln.split(")")[0] for ln in lines if ln.split(";")[0].endswith(": MainThread")]
    main_tid = named[0][len("thread (") :] if named else None
    main: collections.Counter[str] = collections.Counter()
    main_self: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    main_total = imports = other_busy = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        n = int(count)
        head, _, rest = stack.partition(";")
        tid = head[len("thread (") :].split(")")[0]
        frames = [_frame(f) for f in rest.split(";") if f]
        if not frames:
            continue
        if tid == main_tid:
            main_total += n
            if any(f.startswith("_find_and_load ") for f in frames):
                imports += n
            for f in set(frames):
                main[f] += n
            main_self[frames[-1]] += n
        elif not _idle(frames[-1]):
            other_busy += n
            for f in set(frames):
                others[f] += n

    def secs(c: collections.Counter[str]) -> list[list[Any]]:
        return [[f, round(n / rate, 2)] for f, n in c.most_common(top)]

    return {
        "rate_hz": rate,
        "main_thread_seconds": round(main_total / rate, 2),
        "main_thread_import_seconds": round(imports / rate, 2),
        "main_thread_inclusive_seconds": secs(main),
        "main_thread_self_seconds": secs(main_self),
        "other_threads_busy_seconds": round(other_busy / rate, 2),
        "other_threads_busy_inclusive_seconds": secs(others),
    }


def _frame(frame: str) -> str:
    """`func (path/to/mod.py:123)` -> `func (mod.py)`: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    for anchor in ("site-packages", "docpipe_dagster", "benchmarks", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (1 if anchor in ("site-packages", "lib") else 0) :]
            break
    return f"{name} ({'/'.join(parts[-3:])})" if where else name


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


COLUMNS = [
    ("docs", "docs"),
    ("embedder", "embedder"),
    ("chunks_by", "chunked by"),
    ("system", "system"),
    ("run", "run"),
    ("wall_seconds", "s whole process"),
    ("seconds", "s excl. imports"),
    ("docs_per_s_whole", "docs/s whole"),
    ("docs_per_s_excl_imports", "docs/s excl. imports"),
    ("searchable_rows", "chunks"),
    ("embedded", "embedded"),
    ("external_calls", "external calls"),
    ("rows_written", "rows written"),
    ("peak_rss_mb", "peak RSS MB"),
    ("vs_docpipe", "docpipe ×"),
    ("vs_docpipe_local", "docpipe_local ×"),
]


def _splitter_label(s: dict[str, Any]) -> str:
    return f"{s['chunk_size']}/{s['chunk_overlap']} {s['unit']}"


def table_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run: docpipe's once per embedder (it always chunks its own way), each
    peer's per variant with docpipe's ratio against it."""
    rows = []
    for docs, size in doc["sizes"].items():
        seen: set[tuple[str, str]] = set()
        for variant in size["variants"].values():
            systems = variant["systems"]
            ours = {v: systems[v] for v in DOCPIPE_SYSTEMS if v in systems}
            for system, runs in systems.items():
                is_ours = system in DOCPIPE_SYSTEMS
                if is_ours and (variant["embedder"], system) in seen:
                    continue
                seen.add((variant["embedder"], system))
                against = {} if is_ours else ours
                chunks_by = (
                    "docpipe (its defaults)"
                    if is_ours
                    else f"{variant['peer_chunking']}: "
                    + _splitter_label(variant["peer_splitters"][system])
                )
                for label in ("first", "rerun"):
                    r = dict(
                        runs[label],
                        docs=docs,
                        embedder=variant["embedder"],
                        system=system,
                        run=label,
                    )
                    r["chunks_by"] = chunks_by
                    for name, d in against.items():
                        if label == "first":  # docpipe's docs/s (whole) over the peer's
                            vs = _ratio(
                                d["first"]["docs_per_s_whole"], r.get("docs_per_s_excl_imports")
                            )
                        else:  # the peer's seconds over docpipe's
                            vs = _ratio(r.get("seconds"), d["rerun"]["wall_seconds"])
                        r[f"vs_{name}"] = vs
                    rows.append(r)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(COLUMNS)]
    head = "| " + " | ".join(h.ljust(w) for (_, h), w in zip(COLUMNS, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([head, sep, *body])


def peers_available(peers_python: Path | None = None) -> str | None:
    """None when the peers' venv and docpipe's command are there, else why not."""
    python = peers_python or PEERS_VENV / "bin" / "python"
    if not python.exists():
        return f"no peers venv at {python}: run `python -m benchmarks.peers --setup`"
    probe = subprocess.run(
        [str(python), "-c", "import langchain_classic, langchain_postgres, llama_index.core"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"the peers venv {python} lacks a peer: {probe.stderr.strip()[-300:]}"
    if not (Path(sys.executable).parent / "docpipe").exists():
        return f"no docpipe command next to {sys.executable} (pip install -e .[bench])"
    return None


PEER_PACKAGES = [
    line.split("==")[0]
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


def package_versions(peers_python: Path) -> dict[str, str]:
    """The peers' versions (from their venv) and docpipe's main ones (from this one)."""
    from importlib.metadata import version

    code = (
        "import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
        f"{PEER_PACKAGES!r}}}))"
    )
    out = json.loads(
        subprocess.run([str(peers_python), "-c", code], capture_output=True, check=True).stdout
    )
    for name in ("dagster", "pgvector", "psycopg"):
        out[f"docpipe: {name}"] = version(name)
    return out


def setup_peers_venv(venv: Path = PEERS_VENV) -> None:
    """The peers' own venv from benchmarks/peers/requirements.txt."""
    requirements = Path(__file__).with_name("requirements.txt")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)]
    subprocess.run(pip, check=True)
