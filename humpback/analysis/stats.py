"""`humpback stats DIR`: counts, lengths, scores, tiers, instruction verbs/nouns and duplicates of any
segments / pairs / scores / curated / seed data — a folder of Parquet shards, one file, or a whole run folder
(then every stage's data is described side by side)."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.records import RecordError, atomic_path, read_records, read_table, record_format

# Where each kind of data sits inside a run folder or a stage's output folder.
KNOWN_PARTS = ("seed.parquet", "prepared/segments", "segments", "augment/pairs", "pairs", "curate/r*/scores",
               "curate/r*/curated", "scores", "curated", "export/data", "data")


@dataclass
class DataSet:
    name: str
    path: Path
    kind: str  # segments | pairs | scored | scores | seed
    frame: pd.DataFrame


def _kind(columns: set[str]) -> str | None:
    if {"segment_id", "text"} <= columns:
        return "segments"
    if {"instruction", "output", "score"} <= columns:
        return "scored"
    if {"instruction", "output", "pair_id"} <= columns:
        return "pairs"
    if {"instruction", "output"} <= columns:
        return "seed"
    if {"pair_id", "score"} <= columns:
        return "scores"
    return None


def _shards_here(path: Path) -> bool:
    """A folder of Parquet shards itself, as opposed to a run/stage folder holding such folders."""
    return path.is_dir() and any(f.suffix == ".parquet" and not f.name.startswith(".") for f in path.iterdir())


def _load(path: Path, name: str) -> DataSet | None:
    if path.is_dir() and not _shards_here(path):
        return None
    try:
        if path.is_file() and record_format(path) == "jsonl":
            import pyarrow as pa

            table = pa.Table.from_pylist([row for _, row in read_records(path)])
        else:
            table = read_table(path)
    except RecordError:
        raise
    except (ValueError, TypeError) as e:
        raise RecordError(f"{path}: cannot be read as one table: {e}") from None
    kind = _kind(set(table.column_names))
    if kind is None:
        return None
    keep = [c for c in ("text", "heading", "lang", "instruction", "output", "score", "pair_id", "segment_id")
            if c in table.column_names]
    return DataSet(name, path, kind, table.select(keep).to_pandas())


def find_sets(path: str | os.PathLike) -> list[DataSet]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    container = p.is_dir() and any(any(p.glob(part)) for part in KNOWN_PARTS)
    if not container:
        ds = _load(p, p.name)
        if ds is None:
            raise RecordError(f"{p}: not segments, pairs, scores, curated or seed data (no known columns)")
        return [ds]
    sets = []
    for pattern in KNOWN_PARTS:
        for sub in sorted(p.glob(pattern)):
            ds = _load(sub, str(sub.relative_to(p)))
            if ds is not None and not any(s.path == sub for s in sets):
                sets.append(ds)
    if not sets:
        raise RecordError(f"{p}: found no segments/pairs/scores/curated data in it "
                          f"(looked for {', '.join(KNOWN_PARTS)})")
    return sets


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text).strip().lower())


def _lengths(series: pd.Series) -> dict[str, Any]:
    lens = series.fillna("").map(len)
    if lens.empty:
        return {}
    return {"min": int(lens.min()), "median": float(lens.median()), "mean": round(float(lens.mean()), 1),
            "max": int(lens.max())}


def describe(ds: DataSet, top: int = 10) -> dict[str, Any]:
    """Metrics of one data set, JSON-able."""
    df = ds.frame
    out: dict[str, Any] = {"name": ds.name, "kind": ds.kind, "rows": len(df)}
    if ds.kind == "segments":
        out["text_chars"] = _lengths(df["text"])
        out["duplicate_rate"] = _dup_rate(df["text"])
        if "lang" in df:
            out["languages"] = dict(Counter(df["lang"].fillna("?")).most_common(5))
    if "instruction" in df:
        from ..evaluate.diversity import distinct_n, verb_noun

        out["instruction_chars"] = _lengths(df["instruction"])
        out["output_chars"] = _lengths(df["output"])
        out["duplicate_rate"] = _dup_rate(df["instruction"])
        parsed = [verb_noun(str(i)) for i in df["instruction"]]
        verbs = Counter(v for v, _, _ in parsed if v)
        nouns = Counter(n for _, n, _ in parsed if n)
        pairs = Counter(f"{v} {n}" for v, n, _ in parsed if v and n)
        out["forms"] = dict(Counter(f for _, _, f in parsed))
        out["top_verbs"] = dict(verbs.most_common(top))
        out["top_nouns"] = dict(nouns.most_common(top))
        out["top_verb_noun"] = dict(pairs.most_common(top))
        out["distinct_2"] = distinct_n([str(i) for i in df["instruction"]], 2)
    if "score" in df:
        scores = df["score"]
        out["null_scores"] = int(scores.isna().sum())
        valid = scores.dropna()
        out["score_histogram"] = {str(k): int(((valid >= k - 0.5) & (valid < k + 0.5)).sum()) for k in range(1, 6)}
        out["tiers"] = {f">={k}": int((valid >= k).sum()) for k in (5, 4, 3)}
        out["mean_score"] = round(float(valid.mean()), 3) if len(valid) else None
    return out


def _dup_rate(series: pd.Series) -> float:
    if series.empty:
        return 0.0
    normed = series.fillna("").map(_norm)
    return round(1 - normed.nunique() / len(normed), 4)


def collect_stats(path: str | os.PathLike, top: int = 10) -> list[dict[str, Any]]:
    return [describe(ds, top) for ds in find_sets(path)]


def format_stats(results: list[dict[str, Any]]) -> str:
    """One table, a column per data set; then the top verbs/nouns of each set with instructions."""
    rows: dict[str, dict[str, Any]] = {}

    def put(metric: str, name: str, value: Any) -> None:
        rows.setdefault(metric, {})[name] = value

    for r in results:
        n = r["name"]
        put("kind", n, r["kind"])
        put("rows", n, r["rows"])
        for field in ("text_chars", "instruction_chars", "output_chars"):
            if r.get(field):
                L = r[field]
                put(f"{field} min/median/max", n, f"{L['min']}/{L['median']:g}/{L['max']}")
        if "duplicate_rate" in r:
            put("duplicate rate", n, f"{r['duplicate_rate']:.1%}")
        if r.get("distinct_2") is not None:
            put("distinct-2 (instructions)", n, f"{r['distinct_2']:.3f}")
        if "score_histogram" in r:
            put("scores 1/2/3/4/5", n, "/".join(str(v) for v in r["score_histogram"].values()))
            put("tiers >=5 / >=4 / >=3", n, " / ".join(str(v) for v in r["tiers"].values()))
            put("mean score", n, r["mean_score"])
            put("null scores", n, r["null_scores"])
        if "languages" in r:
            put("languages", n, ", ".join(f"{k} {v}" for k, v in r["languages"].items()))
    table = pd.DataFrame(rows).T.fillna("").astype(str)
    lines = [table.to_string()]
    for r in results:
        if r.get("top_verbs"):
            lines.append(f"\n{r['name']}: forms {r['forms']}")
            lines.append("  top verbs:      " + ", ".join(f"{k} {v}" for k, v in r["top_verbs"].items()))
            lines.append("  top nouns:      " + ", ".join(f"{k} {v}" for k, v in r["top_nouns"].items()))
            lines.append("  top verb+noun:  " + ", ".join(f"{k} {v}" for k, v in r["top_verb_noun"].items()))
    return "\n".join(lines)


def plot_stats(path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Length histograms (and score histograms where scored) of every data set under ``path``."""
    out = Path(out_png)
    png = stats_png(find_sets(path))
    with atomic_path(out, suffix=".png") as tmp:  # a full disk leaves no half-written picture
        tmp.write_bytes(png)
    return out


def stats_png(sets: list[DataSet]) -> bytes:
    """``plot_stats``' picture of these data sets as PNG bytes (the run report inlines it)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    fig, axes = plt.subplots(len(sets), cols, figsize=(4 * cols, 2.6 * len(sets)), squeeze=False)
    for row, ds in zip(axes, sets):
        df = ds.frame
        panels = [(c, f"{c} chars") for c in ("text", "instruction", "output") if c in df]
        if "score" in df:
            panels.append(("score", "score"))
        for ax, (col, title) in zip(row, panels):
            values = df[col].dropna()
            values = values if col == "score" else values.map(len)
            if len(values):
                bins = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] if col == "score" else 30
                ax.hist(values, bins=bins, color="#47a")
            ax.set_title(f"{ds.name}: {title}", fontsize=8)
        for ax in row[len(panels):]:
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return buf.getvalue()


__all__ = ["collect_stats", "format_stats", "plot_stats", "stats_png", "find_sets", "describe"]
