"""Retrieval quality and query latency of `upload_pipeline.search`, per mode.

    python -m benchmarks.retrieval                # quality sweep + latency at 10k and 100k chunks
    python -m benchmarks.retrieval --sizes 10000  # latency at 10k only
    python -m benchmarks.retrieval --help

Corpus: real public documents available offline — every licence text the installed Python
packages ship (site-packages/*.dist-info/LICENSE*, licenses/*: Apache-2.0, MIT, BSD, GPL,
PSF, …; a text differing only in its copyright lines kept once) and the Python language reference topics the standard
library ships (`pydoc_data.topics`: one document per topic). Queries whose answer is known:

- generated: for each document, deterministic (seeded) keyword queries of 4-7 content words
  drawn from one of its sentences, in shuffled order, half of them with one word replaced by
  a word the document does not contain; relevant = every document containing that sentence;
- hand-written: natural questions with a known answer document (e.g. the Apache patent
  grant, the `with` statement), relevant = documents matching a predicate on their text.

MRR@10 and recall@5 are computed over documents (a document's rank is its first chunk's).
Vectors are the local mock embedder's (hashed bag of words, computed in-process exactly as
the mock serves them): "vector" measures that embedder, not a semantic model — real
embeddings change the vector and hybrid figures, never the text ones.

Latency: the corpus plus synthetic filler chunks (windows of corpus text with a tenth of the
words replaced, embedded the same way) up to each size, the space's HNSW index built, then every query of
the set in each mode, timed around the SQL call alone (the query embedding excluded), after
one warm-up pass. Runs on its own embedded Postgres (benchmarks.infra), stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import signal
import site
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from docpipe_dagster.core.chunking import ChunkingConfig, split_into_chunks
from docpipe_dagster.store.schema import VectorSpace
from docpipe_dagster.store.search import MODES, search

S = "upload_pipeline"
MODEL = "text-embedding-3-small"
STOP = set(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "which",
        "who",
        "not",
        "no",
        "may",
        "any",
        "all",
        "such",
        "other",
        "than",
        "then",
        "these",
        "those",
        "you",
        "your",
        "their",
        "there",
        "can",
        "must",
        "shall",
        "under",
        "use",
        "used",
        "also",
        "each",
        "one",
        "two",
        "more",
    ]
)


@dataclass
class Doc:
    key: str
    text: str
    media_type: str


@dataclass
class LabelledQuery:
    text: str
    relevant: set[str]
    kind: str  # generated | handwritten


@dataclass
class Corpus:
    docs: list[Doc] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.docs]


def load_corpus() -> Corpus:
    """Licence texts shipped by installed packages (one copy of each text) + pydoc topics."""
    corpus = Corpus()
    seen: set[str] = set()
    paths: list[Path] = []
    for root in {*site.getsitepackages(), site.getusersitepackages()}:
        base = Path(root)
        paths += sorted(base.glob("*.dist-info/LICENSE*"))
        paths += sorted(base.glob("*.dist-info/licenses/**/*"))
        paths += sorted(base.glob("*.dist-info/COPYING*"))
    for path in sorted(set(paths)):
        if not path.is_file() or path.stat().st_size < 400:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        # The same licence with another copyright holder is the same text: kept once.
        body = "\n".join(
            line
            for line in text.splitlines()
            if not line.strip().lower().startswith(("copyright", "(c)"))
        )
        digest = hashlib.sha256(" ".join(body.split()).lower().encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        key = f"licenses/{path.relative_to(_site_root(path)).as_posix()}"
        corpus.docs.append(Doc(key, text, "text/plain"))
    from pydoc_data.topics import topics

    for name in sorted(topics):
        corpus.docs.append(Doc(f"python-reference/{name}.txt", topics[name], "text/plain"))
    return corpus


def _site_root(path: Path) -> Path:
    for parent in path.parents:
        if parent.name in ("site-packages", "dist-packages"):
            return parent
    return path.parent


HANDWRITTEN: list[tuple[str, str]] = [
    # (query, regex a relevant document's text matches)
    (
        "grant of patent license contributor royalty-free irrevocable",
        r"Apache License\s+Version 2\.0",
    ),
    (
        "Apache license patent termination if you institute litigation",
        r"Apache License\s+Version 2\.0",
    ),
    (
        "permission is hereby granted free of charge to any person obtaining a copy",
        r"Permission is hereby granted, free of charge",
    ),
    (
        "redistributions in binary form must reproduce the copyright notice",
        r"Redistributions in binary form must reproduce",
    ),
    (
        "copyleft: convey modified versions under the same license, GNU GPL",
        r"GNU GENERAL PUBLIC LICENSE",
    ),
    ("Mozilla public license larger work file-level copyleft", r"Mozilla Public License"),
    ("Python Software Foundation license agreement PSF", r"PYTHON SOFTWARE FOUNDATION LICENSE"),
    ("how does the with statement call __enter__ and __exit__", r"^The \"with\" statement"),
    ("assert statement raises AssertionError when debugging", r"^The \"assert\" statement"),
    ("try except finally clause exception handler", r"^The \"try\" statement"),
    ("for loop over an iterable with an else clause", r"^The \"for\" statement"),
    ("yield expression in a generator function", r"(?i)^Yield expressions"),
    ("lambda anonymous function expression", r"^Lambdas"),
    ("global statement declares names in the module namespace", r"^The \"global\" statement"),
    ("operator precedence table from lowest to highest", r"^Operator precedence"),
    (
        "string formatting mini-language format specification fill align width",
        r"(?i)^Format Specification Mini-Language",
    ),
    ("slicing a sequence with start stop step", r"^Slicings"),
    ("import statement finds and loads a module", r"^The \"import\" statement"),
    ("raise an exception from another with __cause__", r"^The \"raise\" statement"),
    ("class definition with base classes and a metaclass", r"^Class definitions"),
]


def make_queries(corpus: Corpus, per_doc: int, seed: int) -> list[LabelledQuery]:
    rng = random.Random(seed)
    normalised = {d.key: " ".join(d.text.split()).lower() for d in corpus.docs}
    queries: list[LabelledQuery] = []
    vocab = sorted({w for t in normalised.values() for w in re.findall(r"[a-z]{4,}", t)})
    for doc in corpus.docs:
        sentences = [
            s.strip()
            for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", doc.text)
            if len(re.findall(r"[A-Za-z]{3,}", s)) >= 12
        ]
        if not sentences:
            continue
        for i in range(per_doc):
            sentence = rng.choice(sentences)
            words = [w for w in re.findall(r"[A-Za-z_]{3,}", sentence) if w.lower() not in STOP]
            words = list(dict.fromkeys(words))
            if len(words) < 5:
                continue
            picked = rng.sample(words, min(len(words), rng.randint(4, 7)))
            if i % 2 == 1:  # one word the document lacks: a query is never a perfect copy
                doc_text = normalised[doc.key]
                outsider = next(
                    w for w in (rng.choice(vocab) for _ in range(50)) if w not in doc_text
                )
                picked[rng.randrange(len(picked))] = outsider
            needle = " ".join(sentence.split()).lower()
            relevant = {k for k, t in normalised.items() if needle in t}
            queries.append(LabelledQuery(" ".join(picked), relevant, "generated"))
    for text, pattern in HANDWRITTEN:
        relevant = {d.key for d in corpus.docs if re.search(pattern, d.text.lstrip(), re.M)}
        if relevant:
            queries.append(LabelledQuery(text, relevant, "handwritten"))
    return queries


# --- loading -----------------------------------------------------------------------------------


def _vec_text(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


def load_chunks(conn: psycopg.Connection, rows: list[tuple[Doc, list[Any]]], dims: int) -> int:
    """One completed job per document and its chunks, COPYed into document_chunks."""
    from docpipe_dagster_mocks.openai.app import embed_text

    n = 0
    jobs = []
    for doc, _ in rows:
        sha = hashlib.sha256(doc.text.encode()).hexdigest()
        doc_id = uuid.uuid5(uuid.NAMESPACE_URL, doc.key)
        jobs.append((uuid.uuid5(doc_id, sha), doc_id, doc.key, sha, len(doc.text), doc.media_type))
    with conn.cursor() as cur:
        with cur.copy(
            f"COPY {S}.upload_jobs (job_id, document_id, storage_key, content_sha256, size_bytes,"
            " media_type, state) FROM STDIN"
        ) as copy:
            for job in jobs:
                copy.write_row((*job, "completed"))
        with cur.copy(
            f"COPY {S}.document_chunks (chunk_id, document_id, job_id, storage_key, content_sha256,"
            " chunk_index, content, heading_path, token_estimate, embedding_model, dims, embedding,"
            " char_start, char_end) FROM STDIN"
        ) as copy:
            for (doc, chunks), job in zip(rows, jobs, strict=True):
                for c in chunks:
                    vec = embed_text(c.text, dims, MODEL)
                    copy.write_row(
                        (
                            uuid.uuid5(job[0], str(c.index)),
                            job[1],
                            job[0],
                            doc.key,
                            job[3],
                            c.index,
                            c.text,
                            list(c.heading_path),
                            c.token_estimate,
                            MODEL,
                            dims,
                            _vec_text(vec),
                            c.start,
                            c.end,
                        )
                    )
                    n += 1
    conn.commit()
    return n


def chunk_corpus(corpus: Corpus, max_chars: int, overlap: int) -> list[tuple[Doc, list[Any]]]:
    config = ChunkingConfig(max_chars=max_chars, overlap_chars=overlap)
    return [(d, split_into_chunks(d.text, config)) for d in corpus.docs]


def filler(corpus: Corpus, n: int, seed: int, start: int) -> list[tuple[Doc, list[Any]]]:
    """n synthetic chunks (one per filler document): a window of 60-180 consecutive words of
    a corpus document with a tenth of them replaced by random corpus words. Topic-clustered
    like a real collection (random bags of words would make every vector equidistant, a
    worst case for HNSW that no real corpus has)."""
    from docpipe_dagster.core.chunking import Chunk

    rng = random.Random(seed + start)
    texts = [re.findall(r"\S+", d.text) for d in corpus.docs]
    texts = [t for t in texts if len(t) >= 200]
    vocab = [w for t in texts for w in t]
    out = []
    for i in range(start, start + n):
        words = rng.choice(texts)
        size = rng.randint(60, 180)
        at = rng.randrange(0, len(words) - size)
        window = words[at : at + size]
        for _ in range(size // 10):
            window[rng.randrange(size)] = rng.choice(vocab)
        text = " ".join(window)
        chunk = Chunk(0, text, 0, len(text), (), len(text) // 4)
        out.append((Doc(f"filler/{i:06d}.txt", text, "text/plain"), [chunk]))
    return out


def build_index(url: str, dims: int) -> float:
    from docpipe_dagster.store.queries import IndexBuild, Store, VectorSpace

    started = time.perf_counter()
    with Store.open(url, max_size=1) as store:
        store.ensure_vector_space(VectorSpace(MODEL, dims), IndexBuild(parallel_workers=1))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ANALYZE {S}.document_chunks")
        conn.execute(f"ANALYZE {S}.upload_jobs")
    return time.perf_counter() - started


def drop_index(url: str, dims: int) -> None:
    """Drop the space's HNSW index (its registered name) so the next load is a bulk load."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT index_name FROM {S}.vector_spaces WHERE embedding_model = %s AND dims = %s",
            (MODEL, dims),
        ).fetchone()
        if row:
            conn.execute(f"DROP INDEX IF EXISTS {S}.{row[0]}")


# --- measuring ---------------------------------------------------------------------------------


def run_queries(
    url: str, queries: list[LabelledQuery], dims: int, modes: tuple[str, ...], ef: int | None
) -> dict[str, Any]:
    from docpipe_dagster_mocks.openai.app import embed_text

    vectors = [embed_text(q.text, dims, MODEL) for q in queries]
    space = VectorSpace(MODEL, dims)
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for mode in modes:
            rr, rec, lat = [], [], []
            for q, vec in zip(queries, vectors, strict=True):
                started = time.perf_counter()
                hits = search(conn, q.text, vec, k=10, mode=mode, space=space, ef_search=ef)
                lat.append((time.perf_counter() - started) * 1000)
                docs = list(dict.fromkeys(h.storage_key for h in hits))
                first = next((i for i, key in enumerate(docs[:10], 1) if key in q.relevant), None)
                rr.append(1 / first if first else 0.0)
                rec.append(len(set(docs[:5]) & q.relevant) / min(len(q.relevant), 5))
            out[mode] = {
                "mrr@10": round(statistics.fmean(rr), 4),
                "recall@5": round(statistics.fmean(rec), 4),
                "p50_ms": round(_pct(lat, 50), 2),
                "p95_ms": round(_pct(lat, 95), 2),
            }
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[idx]


def vector_recall_vs_exact(url: str, queries: list[LabelledQuery], dims: int, ef: int) -> float:
    """Overlap of the HNSW top-10 with the exact top-10 (index quality at this ef_search)."""
    from docpipe_dagster_mocks.openai.app import embed_text

    cast = f"vector({dims})"
    total = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for q in queries:
            vec = embed_text(q.text, dims, MODEL)
            got = {h.chunk_id for h in search(conn, q.text, vec, k=10, mode="vector",
                                              space=VectorSpace(MODEL, dims), ef_search=ef)}  # fmt: skip
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                exact = conn.execute(
                    f"SELECT chunk_id::text FROM {S}.document_chunks WHERE embedding_model = %s"
                    f" AND dims = %s ORDER BY embedding::{cast} <=> %s::{cast} LIMIT 10",
                    (MODEL, dims, _vec_text(vec)),
                ).fetchall()
            total += len(got & {r[0] for r in exact}) / max(1, len(exact))
    return round(total / len(queries), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument(
        "--sizes", default="10000,100000", help="chunk counts for latency ('' = none)"
    )
    parser.add_argument("--chunkings", default="600:100,1200:150,2000:200", help="max:overlap,…")
    parser.add_argument("--ef", default="20,40,100", help="ef_search values compared")
    parser.add_argument("--per-doc", type=int, default=2, help="generated queries per document")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval.json"))
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the embedded Postgres and the mocks are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from benchmarks.infra import Infra

    corpus = load_corpus()
    queries = make_queries(corpus, args.per_doc, args.seed)
    chunkings = [tuple(int(x) for x in c.split(":")) for c in args.chunkings.split(",") if c]
    efs = [int(x) for x in args.ef.split(",") if x]
    sizes = [int(x) for x in args.sizes.split(",") if x]
    report: dict[str, Any] = {
        "corpus": {
            "documents": len(corpus.docs),
            "licence_texts": sum(k.startswith("licenses/") for k in corpus.keys),
            "python_reference_topics": sum(k.startswith("python-reference/") for k in corpus.keys),
            "characters": sum(len(d.text) for d in corpus.docs),
        },
        "queries": {
            "total": len(queries),
            "generated": sum(q.kind == "generated" for q in queries),
            "handwritten": sum(q.kind == "handwritten" for q in queries),
        },
        "dims": args.dims,
        "quality": [],
        "latency": [],
    }
    print(
        f"corpus: {len(corpus.docs)} documents ({report['corpus']['licence_texts']} licence texts,"
        f" {report['corpus']['python_reference_topics']} Python reference topics),"
        f" {len(queries)} labelled queries",
        flush=True,
    )
    with Infra(args.workdir) as infra:
        for max_chars, overlap in chunkings:
            url = infra.new_database("quality")
            with psycopg.connect(url) as conn:
                n = load_chunks(conn, chunk_corpus(corpus, max_chars, overlap), args.dims)
            build_index(url, args.dims)
            for ef in efs if (max_chars, overlap) == (1200, 150) else [None]:
                row = {"max_chars": max_chars, "overlap": overlap, "chunks": n, "ef_search": ef}
                row["modes"] = run_queries(url, queries, args.dims, MODES, ef)
                by_kind = {}
                for kind in ("generated", "handwritten"):
                    subset = [q for q in queries if q.kind == kind]
                    by_kind[kind] = run_queries(url, subset, args.dims, MODES, ef)
                row["by_kind"] = by_kind
                report["quality"].append(row)
                print(_quality_line(row), flush=True)
            infra.drop_database(url)

        if sizes:
            url = infra.new_database("latency")
            with psycopg.connect(url) as conn:
                loaded = load_chunks(conn, chunk_corpus(corpus, 1200, 150), args.dims)
            rng = random.Random(args.seed)
            sample = rng.sample(queries, min(args.latency_queries, len(queries)))
            for size in sorted(sizes):
                drop_index(url, args.dims)
                started = time.perf_counter()
                while loaded < size:
                    step = min(20_000, size - loaded)
                    with psycopg.connect(url) as conn:
                        loaded += load_chunks(
                            conn, filler(corpus, step, args.seed, loaded), args.dims
                        )
                load_s = time.perf_counter() - started
                build_s = build_index(url, args.dims)
                run_queries(url, sample[:10], args.dims, MODES, None)  # warm-up
                for ef in (40, 100):
                    row = {
                        "chunks": loaded,
                        "ef_search": ef,
                        "load_s": round(load_s, 1),
                        "index_build_s": round(build_s, 1),
                        "modes": run_queries(url, sample, args.dims, MODES, ef),
                        "vector_top10_overlap_with_exact": vector_recall_vs_exact(
                            url, sample[:30], args.dims, ef
                        ),
                    }
                    report["latency"].append(row)
                    print(_latency_line(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return 0


def _quality_line(row: dict[str, Any]) -> str:
    modes = "  ".join(
        f"{m}: MRR@10 {v['mrr@10']:.3f} R@5 {v['recall@5']:.3f}" for m, v in row["modes"].items()
    )
    return f"chunks {row['max_chars']}/{row['overlap']} ({row['chunks']}), ef {row['ef_search']}: {modes}"


def _latency_line(row: dict[str, Any]) -> str:
    modes = "  ".join(
        f"{m}: p50 {v['p50_ms']:.1f} ms p95 {v['p95_ms']:.1f} ms" for m, v in row["modes"].items()
    )
    return (
        f"{row['chunks']} chunks, ef {row['ef_search']}: {modes}; vector top-10 vs exact "
        f"{row['vector_top10_overlap_with_exact']:.3f} (load {row['load_s']} s, index {row['index_build_s']} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
