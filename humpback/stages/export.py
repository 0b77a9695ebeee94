"""`humpback export`: a curated dataset as Hub-ready Parquet + dataset card, to a folder or a Hub repo.

Layout (what `datasets.load_dataset(OUT)` and the Hub viewer read)::

    OUT/README.md                      dataset card: YAML metadata + how it was made, counts, plots, self-check
    OUT/data/train-00000-of-0000N.parquet
    OUT/score_hist.png, OUT/lengths.png  the exported round's scores, the rows' lengths
    OUT/score_hist_rN.png              every curation round's score histogram (the card shows them)
    OUT/humpback_export.json           machine-readable provenance (config, models, counts)

The export is written to OUT.partial and renamed, so an interrupted export never leaves a half dataset.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.config import ConfigError
from ..core.faults import fault_point
from ..core.records import (MESSAGE_TYPE, parquet_files, publish_dir, read_json, read_records, read_table, recover_dir,
                      write_json)
from .train.data import SEED_TAG, WEB_TAG

log = logging.getLogger("humpback.export")

ROWS_PER_SHARD = 100_000

EXPORT_SCHEMA = pa.schema([
    ("messages", pa.list_(MESSAGE_TYPE)),
    ("instruction", pa.string()),
    ("output", pa.string()),
    ("score", pa.float64()),
    ("score_probs", pa.list_(pa.float64())),
    ("expected_score", pa.float64()),
    ("pmi", pa.float64()),
    ("origin", pa.string()),  # augmented | seed
    ("round", pa.int64()),
    ("pair_id", pa.string()),
    ("segment_id", pa.string()),
    ("doc_id", pa.string()),
    ("url", pa.string()),
    ("backward_model", pa.string()),
    ("scorer", pa.string()),
    ("scorer_model", pa.string()),
    ("gen_params", pa.string()),
])


class ExportError(RuntimeError):
    """The export or upload failed; the message says what is intact and what to do."""


@dataclass
class Source:
    """Where the scored pairs of one curate output come from, and what made them."""

    curate_dir: Path
    pairs_dir: Path
    stats: dict[str, Any]
    round: int
    manifest: Optional[dict[str, Any]] = None
    seed_path: Optional[Path] = None
    # every finished curate round up to this one, (round, folder); a curate output alone is its own only round
    round_dirs: list[tuple[int, Path]] = field(default_factory=list)


@dataclass
class ExportResult:
    output: str
    rows: int
    by_origin: dict[str, int]
    shards: int
    min_score: float
    excluded: int
    source: str
    hub_url: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"exported {self.rows} rows ({', '.join(f'{k} {v}' for k, v in self.by_origin.items())}) "
                 f"with score >= {self.min_score:g} from {self.source}",
                 f"-> {self.output} ({self.shards} Parquet shard(s), README.md dataset card, plots)"]
        if self.excluded:
            lines.append(f"excluded {self.excluded} flagged pairs")
        if self.hub_url:
            lines.append(f"uploaded to {self.hub_url}")
        lines.extend(self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- sources
def find_source(path: str | os.PathLike, round: Optional[int] = None) -> Source:
    """A run dir (its curate round ``round``; by default its last round, or the round the collapse guard made
    the run's result when it stopped the run), a curate output dir, or its curated/ or scores/ folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder")
    manifest = None
    if (p / "manifest.json").is_file():
        manifest = read_json(p / "manifest.json")
        rounds = sorted((int(d.name[1:]), d) for d in (p / "curate").glob("r*")
                        if d.name[1:].isdigit() and (d / "stats.json").is_file())
        if not rounds:
            raise ExportError(f"{p}: this run has no finished curate round yet; run `humpback run` further")
        result = manifest.get("result") or {}
        if round is None and result.get("stopped_after"):
            round = result.get("round")
        if round is not None and round in dict(rounds):
            rounds = [rd for rd in rounds if rd[0] <= round]
        elif round is not None:
            log.warning("export: %s has no finished curate round %d; exporting its last round", p, round)
        r, curate_dir = rounds[-1]
        seed = p / "seed.parquet"
        src = _curate_source(curate_dir, r)
        src.manifest, src.seed_path = manifest, seed if seed.is_file() else None
        src.round_dirs = rounds
        return src
    if p.name in ("curated", "scores") and (p.parent / "stats.json").is_file():
        p = p.parent
    if (p / "stats.json").is_file() and (p / "scores").is_dir():
        return _curate_source(p, _round_from_name(p.name))
    raise ExportError(f"{p}: not a run folder (manifest.json) nor a `humpback curate` output (stats.json + "
                      "scores/); point export at one of those")


def _round_from_name(name: str) -> int:
    return int(name[1:]) if name.startswith("r") and name[1:].isdigit() else 1


def _curate_source(curate_dir: Path, r: int) -> Source:
    stats = read_json(curate_dir / "stats.json")
    pairs_dir = Path(stats.get("input", ""))
    if not parquet_files(pairs_dir):
        raise ExportError(f"{curate_dir}/stats.json: input {pairs_dir} has no pair shards any more; the "
                          "scores cannot be joined with their pairs")
    return Source(curate_dir=curate_dir, pairs_dir=pairs_dir, stats=stats, round=r, round_dirs=[(r, curate_dir)])


def read_exclusions(paths: Sequence[str | os.PathLike]) -> set[str]:
    """pair_ids from JSONL/Parquet files of flagged rows (e.g. `humpback eval decontam --output`)."""
    ids: set[str] = set()
    for path in paths:
        for where, row in read_records(path):
            if not row.get("pair_id"):
                at = f"{where.file}: row {where.index}" if where.kind == "row" else str(where)
                raise ConfigError(f"{at}: field 'pair_id' missing (exclusion files list flagged pairs)")
            ids.add(str(row["pair_id"]))
    return ids


# ---------------------------------------------------------------------------------------------- rows
def _augmented_rows(src: Source, min_score: float, exclude: set[str]) -> tuple[list[dict], int, list[float]]:
    scores: dict[str, dict] = {}
    all_scores: list[float] = []
    for f in parquet_files(src.curate_dir / "scores"):
        for r in read_table(f, "score").to_pylist():
            scores[r["pair_id"]] = r
            if r["score"] is not None:
                all_scores.append(r["score"])
    rows, excluded = [], 0
    for f in parquet_files(src.pairs_dir):
        for p in read_table(f, "pair").to_pylist():
            s = scores.get(p["pair_id"])
            if s is None or s["score"] is None or s["score"] < min_score:
                continue
            if p["pair_id"] in exclude:
                excluded += 1
                continue
            rows.append({
                "messages": [{"role": "system", "content": WEB_TAG}, {"role": "user", "content": p["instruction"]},
                             {"role": "assistant", "content": p["output"]}],
                "instruction": p["instruction"], "output": p["output"], "score": s["score"],
                "score_probs": s["score_probs"], "expected_score": s["expected_score"], "pmi": s["pmi"],
                "origin": "augmented", "round": src.round, "pair_id": p["pair_id"], "segment_id": p["segment_id"],
                "doc_id": p["doc_id"], "url": p["url"], "backward_model": p["backward_model"],
                "scorer": s["scorer"], "scorer_model": s["model"], "gen_params": p["gen_params"],
            })
    rows.sort(key=lambda r: r["pair_id"])  # shard layout does not leak into the dataset order
    return rows, excluded, all_scores


def _seed_rows(seed_path: Path, exclude: set[str]) -> tuple[list[dict], int]:
    rows, excluded = [], 0
    for r in read_table(seed_path).to_pylist():
        if r["id"] in exclude:  # `eval decontam` flags seed pairs by their id too
            excluded += 1
            continue
        rows.append({
            "messages": [{"role": "system", "content": SEED_TAG}, {"role": "user", "content": r["instruction"]},
                         {"role": "assistant", "content": r["output"]}],
            "instruction": r["instruction"], "output": r["output"], "score": None, "score_probs": None,
            "expected_score": None, "pmi": None, "origin": "seed", "round": 0, "pair_id": r["id"],
            "segment_id": None, "doc_id": None, "url": None, "backward_model": None, "scorer": None,
            "scorer_model": None, "gen_params": None,
        })
    return rows, excluded


# ---------------------------------------------------------------------------------------------- export
EXPORT_MARKER = "humpback_export.json"


def check_export_target(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier humpback export."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose another --to-dir")
    if any(out.iterdir()) and not (out / EXPORT_MARKER).is_file():
        raise ExportError(f"{out}: a non-empty folder that is not a humpback export (no {EXPORT_MARKER}); "
                          "choose another --to-dir, or empty it yourself")


def export_dataset(source: str | os.PathLike, output: str | os.PathLike, min_score: Optional[float] = None,
                   exclude: Sequence[str | os.PathLike] = (), with_seed: bool = False, license: str = "other",
                   pretty_name: Optional[str] = None, round: Optional[int] = None) -> ExportResult:
    """Write the curated pairs of ``source`` with score >= ``min_score`` (default: curate's) to ``output``;
    ``round``: which curate round of a run folder (default: the run's result, see :func:`find_source`)."""
    src = find_source(source, round)
    min_score = float(min_score if min_score is not None else src.stats.get("min_score", 5.0))
    excluded_ids = read_exclusions(exclude)
    rows, excluded, all_scores = _augmented_rows(src, min_score, excluded_ids)
    notes = []
    if with_seed:
        if src.seed_path is None:
            raise ExportError("--with-seed needs a run folder (with seed.parquet) as the source")
        seed_rows, seed_excluded = _seed_rows(src.seed_path, excluded_ids)
        rows = seed_rows + rows
        excluded += seed_excluded
    if not rows:
        notes.append(f"note: no pair reaches score {min_score:g}; the dataset is empty (lower --min-score?)")
    out = Path(output)
    recover_dir(out)
    check_export_target(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    shards = max(1, math.ceil(len(rows) / ROWS_PER_SHARD))
    for i in range(shards):
        chunk = rows[i * ROWS_PER_SHARD:(i + 1) * ROWS_PER_SHARD]
        pq.write_table(pa.Table.from_pylist(chunk, schema=EXPORT_SCHEMA),
                       tmp / "data" / f"train-{i:05d}-of-{shards:05d}.parquet")
    by_origin = dict(Counter(r["origin"] for r in rows))
    from .export_card import example_rows, project_url, render_card

    rounds = _rounds_info(src)
    _plots(rows, all_scores, min_score, tmp, rounds)
    info = {
        "source": str(Path(source)), "curate_dir": str(src.curate_dir), "round": src.round,
        "min_score": min_score, "rows": len(rows), "by_origin": by_origin, "excluded": excluded,
        "exclude": [str(p) for p in exclude],
        "curate_stats": {k: v for k, v in src.stats.items() if k != "config"},
        "curate_config": src.stats.get("config"),
        "rounds": rounds,
        "run": _run_info(src.manifest) if src.manifest else None,
        "examples": example_rows(rows),
        "project_url": project_url(),
    }
    write_json(info, tmp / EXPORT_MARKER)

    (tmp / "README.md").write_text(render_card(info, license=license, pretty_name=pretty_name), encoding="utf-8")
    fault_point("export.before_publish")
    publish_dir(tmp, out)
    return ExportResult(output=str(out), rows=len(rows), by_origin=by_origin, shards=shards, min_score=min_score,
                        excluded=excluded, source=str(source), notes=notes)


def _run_info(manifest: dict[str, Any]) -> dict[str, Any]:
    cfg = manifest.get("config", {})
    stages = manifest.get("stages", {})
    return {
        "name": cfg.get("name"), "base_model": cfg.get("base_model"), "rounds": cfg.get("rounds"),
        "base_parameters": model_parameters(cfg.get("base_model")),
        "config_hash": manifest.get("config_hash"), "config": cfg, "versions": manifest.get("versions"),
        "result": manifest.get("result"), "stopped": manifest.get("stopped"),
        "stages": {name: {"status": rec.get("status"), "seconds": rec.get("seconds"), "result": rec.get("result")}
                   for name, rec in stages.items()},
        "models": {name: _training_info((rec.get("result") or {}).get("output")) for name, rec in stages.items()
                   if name == "backward" or (name[:1] == "m" and name[1:].isdigit())},
    }


def _training_info(folder: Optional[str]) -> Optional[dict[str, Any]]:
    """Batch, length and LoRA settings of a trained model, from its humpback_train.json (None without one)."""
    marker = Path(folder) / "humpback_train.json" if folder else None
    if marker is None or not marker.is_file():
        return None
    try:
        summary = read_json(marker)
    except Exception as e:  # a card without these figures beats no export
        log.warning("export: %s unreadable (%s); the card leaves its training settings out", marker, e)
        return None
    hp = summary.get("hyperparameters") or {}
    return {"batch_size": hp.get("batch_size"), "max_length": hp.get("max_length"),
            "learning_rate": hp.get("learning_rate"), "lora": hp.get("lora"),
            "examples_by_origin": (summary.get("data") or {}).get("examples_by_origin")}


def model_parameters(reference: Optional[str]) -> Optional[int]:
    """Parameters of a model reference, counted from its local safetensors headers with
    engines.openai_compat.count_parameters (an adapter: its base); None without a local copy. Never converts an
    alias nor asks the network."""
    if not reference:
        return None
    from ..engines.openai_compat import count_parameters
    from ..core.models import ALIASES, _alias_target, resolve

    try:
        if reference in ALIASES:
            target = _alias_target(ALIASES[reference])
            return count_parameters(str(target)) if (target / "humpback_source.json").is_file() else None
        m = resolve(reference)
        path = m.base if m.kind == "adapter" and m.base else m.path
        if not Path(path).is_dir():  # an HF id: its snapshot in the local cache, if any
            from huggingface_hub import snapshot_download

            path = snapshot_download(path, local_files_only=True)
        return count_parameters(path)
    except Exception as e:  # no local copy, or an unreadable one: the card says the count is unknown
        log.debug("export: parameters of %s not counted: %s", reference, e)
        return None


def _rounds_info(src: Source) -> list[dict[str, Any]]:
    """What the card's per-round table shows, for every curate round of the source (stats.json of each)."""
    out = []
    for r, folder in src.round_dirs or [(src.round, src.curate_dir)]:
        stats = src.stats if folder == src.curate_dir else read_json(folder / "stats.json")
        out.append({
            "round": r, "curate_dir": str(folder), "model": stats.get("model"),
            "model_parameters": model_parameters(stats.get("model")), "scorer": stats.get("scorer"),
            "min_score": stats.get("min_score"), "pairs_scored": stats.get("pairs_scored"),
            "selected": stats.get("selected"), "tiers": stats.get("tiers"), "histogram": stats.get("histogram"),
            "null_scores": stats.get("null_scores"), "pmi_cuts": stats.get("pmi_cuts"),
            "self_check": stats.get("self_check") or {},
            "plot": f"score_hist_r{r}.png" if stats.get("histogram") else None,
        })
    return out


def _plots(rows: list[dict], all_scores: list[float], min_score: float, folder: Path,
           rounds: Sequence[dict[str, Any]] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    ax.hist(all_scores, bins=bins, color="#888", label="all scored pairs")
    ax.hist([r["score"] for r in rows if r["score"] is not None], bins=bins, color="#2a7", label="exported")
    ax.axvline(min_score - 0.5, color="k", ls="--", lw=1)
    ax.set_xlabel("score")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "score_hist.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key in zip(axes, ("instruction", "output")):
        lengths = [len(r[key]) for r in rows]
        if lengths:
            ax.hist(lengths, bins=min(30, max(5, len(lengths) // 3)), color="#47a")
        ax.set_title(f"{key} length (chars)", fontsize=9)
        ax.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(folder / "lengths.png", dpi=110)
    plt.close(fig)

    from .curate import _plot_histogram

    for rd in rounds:
        if rd.get("plot"):
            scorer = f"{rd.get('scorer')} scores" if rd.get("scorer") else "scores"
            _plot_histogram(rd["histogram"], f"round {rd['round']}: {scorer} ({Path(str(rd.get('model'))).name})",
                            folder / rd["plot"])


# ---------------------------------------------------------------------------------------------- hub
def upload_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False,
                  token_env: Optional[str] = None) -> str:
    """Upload an export folder to a Hub dataset repo; returns the repo URL. The token is never printed."""
    from huggingface_hub import HfApi

    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise ExportError(f"--token-env {token_env}: that environment variable is not set")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "the Hugging Face Hub"
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="humpback export", allow_patterns=["README.md", "*.png", "*.json",
                                                                            "data/*.parquet"])
    except Exception as e:  # network, auth, offline mode: all end the same way for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if token and token in msg:
            msg = msg.replace(token, "***")
        raise ExportError(f"upload of {folder} to {where} as dataset {repo_id} failed: {type(e).__name__}: {msg}. "
                          f"The local export in {folder} is intact; rerun the upload when the network/login works "
                          "(`huggingface-cli login`, or --token-env VAR)") from None
    return str(url)


__all__ = ["export_dataset", "upload_to_hub", "find_source", "read_exclusions", "ExportError", "ExportResult",
           "EXPORT_SCHEMA"]
