"""The peers benchmark's variants, targets, ratios and table (no I/O: the tests use them)."""

from __future__ import annotations

from typing import Any

# docpipe's variants and the environment each adds to the defaults.
DOCPIPE_SYSTEMS: dict[str, dict[str, str]] = {
    "docpipe": {},
    "docpipe_local": {"DOCPIPE_PARSE_LOCALLY": "txt,md,markdown,json,html"},
}
SYSTEMS = (*DOCPIPE_SYSTEMS, "langchain", "llamaindex")
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


def _rate(n: float, seconds: float | None) -> float | None:
    return round(n / seconds, 2) if seconds else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


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
