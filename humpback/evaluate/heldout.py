"""``humpback eval heldout``: mean per-token negative log-likelihood of held-out human reference outputs
given their instructions, per model, side by side, with bootstrap intervals and paired differences.

The prompt is the forward model's own (:func:`humpback.stages.train.forward_messages`) with the chosen system
tag, rendered by the model's chat template; only the reference output's tokens are scored. The mean is
token-weighted (total NLL / total tokens), the usual corpus-level NLL; the bootstrap resamples examples.
A lower NLL means the model puts more probability on what the human wrote.

``seed import --heldout-fraction F`` keeps these pairs out of training (``<stem>.heldout.parquet``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.config import ConfigError
from ..core.models import ALIASES
from ..core.records import write_jsonl
from ..stages.train.config import SEED_TAG, WEB_TAG
from ..stages.train.data import forward_messages
from .common import (EvalConfig, LazyModel, bootstrap_ci, cached_chunks, fingerprint, fmt_ci, is_run_dir, load_items,
                     model_key, pyplot, sample_items, save_figure, unique_labels, write_result)

log = logging.getLogger("humpback.eval")

# --system values: the paper's names and ours, mapped to forward_messages tags.
SYSTEMS = {"S_a": "seed", "seed": "seed", "S_w": "web", "web": "web", "both": "both", "none": None}
CANONICAL = {"seed": "S_a", "web": "S_w", "both": "both", None: "none"}


def parse_systems(value: str | Sequence[str]) -> list[str]:
    """Comma-separated (or listed) system settings → canonical names (S_a, S_w, both, none), in order."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for part in (p.strip() for p in parts):
        if part not in SYSTEMS:
            raise ConfigError(f"--system {part!r}: expected S_a, S_w, both or none (or seed, web)")
        name = CANONICAL[SYSTEMS[part]]
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("--system: no value given")
    return out


def _tag(system: str) -> str | None:
    return SYSTEMS[system]


def heldout_source(path: str | Path) -> Path:
    """A run directory's held-out split, or the file/folder itself."""
    p = Path(path)
    if is_run_dir(p):
        for name in ("seed.heldout.parquet", "seed.heldout.jsonl"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: a run directory without seed.heldout.parquet; import the seed with "
                                "--heldout-fraction, or give the held-out file itself")
    return p


def resolve_model_refs(refs: Sequence[str], run_dir: Path | None) -> list[str]:
    """Model references as given; a bare name that is neither an alias nor an existing path may name a model
    folder of the run (``m0`` → RUN/models/m0)."""
    out = []
    for ref in refs:
        ref = ref.strip()
        if not ref:
            continue
        if ref not in ALIASES and not Path(ref).expanduser().exists() and run_dir is not None \
                and (run_dir / "models" / ref).is_dir():
            ref = str(run_dir / "models" / ref)
        out.append(ref)
    if not out:
        raise ConfigError("--models: no model given")
    return out


def model_tags(ref: str) -> tuple[str, str]:
    """The S_a / S_w texts a humpback-trained model was trained with (its humpback_train.json), else defaults."""
    marker = Path(ref).expanduser() / "humpback_train.json"
    if marker.is_file():
        try:
            cfg = json.loads(marker.read_text()).get("config", {})
            return cfg.get("seed_tag") or SEED_TAG, cfg.get("web_tag") or WEB_TAG
        except (json.JSONDecodeError, AttributeError) as e:
            # a damaged marker must not silently change what the model is evaluated with
            log.warning("%s: unreadable (%s); evaluating with the default system tags", marker, e)
    return SEED_TAG, WEB_TAG


def _nll_arrays(rows: list) -> tuple[np.ndarray, np.ndarray]:
    nll = np.array([r[0] for r in rows], dtype=float)
    tok = np.array([r[1] for r in rows], dtype=float)
    return nll, tok


def _mean_nll(nll: np.ndarray, tok: np.ndarray, idx: np.ndarray | None = None) -> float | None:
    if idx is not None:
        nll, tok = nll[idx], tok[idx]
    total = tok.sum()
    return float(nll.sum() / total) if total > 0 else None


def evaluate_heldout(
    data: str | Path,
    models: Sequence[str],
    output: str | Path,
    systems: Sequence[str] = ("both",),
    config: EvalConfig | None = None,
    max_examples: int | None = None,
    work: str | Path | None = None,
) -> dict:
    """Per-token NLL of the reference outputs in ``data`` under each model and system setting; writes
    heldout.json, per_example.jsonl and heldout_nll.png into ``output`` and returns the summary. ``work`` holds
    the per-chunk NLL checkpoints (default OUTPUT/.work); evaluations that share one reuse a model's NLLs."""
    cfg = config or EvalConfig()
    out = Path(output)
    run_dir = Path(data) if is_run_dir(data) else None
    source = heldout_source(data)
    refs = resolve_model_refs(models, run_dir)
    labels = unique_labels(refs)
    systems = parse_systems(list(systems))
    items = sample_items(load_items(source, need_output=True), max_examples, cfg.seed)
    ids = [it.id for it in items]
    log.warning("eval heldout: %d examples from %s, models %s, system %s -> %s", len(items), source,
                ", ".join(labels), ", ".join(systems), out)

    per: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {label: {} for label in labels}
    for ref, label in zip(refs, labels):
        seed_tag, web_tag = model_tags(ref)
        with LazyModel(ref, cfg) as engine_for:
            for system in systems:
                messages = [forward_messages(it.instruction, _tag(system), seed_tag, web_tag) for it in items]
                key = fingerprint([model_key(ref), cfg.engine.dtype, messages[0][:-1], ids])

                def compute(idx, messages=messages, engine_for=engine_for):
                    engine = engine_for()
                    prompts = [engine.format_chat(messages[i]) for i in idx]
                    scores = engine.continuation_logprobs(prompts, [items[i].output for i in idx])
                    return [[-s.sum, s.n_tokens] for s in scores]

                rows = cached_chunks(Path(work or out / ".work") / f"nll-{key}", ids, compute, cfg.chunk_size,
                                     f"{label} [{system}]")
                per[label][system] = _nll_arrays(rows)

    summary = _summarise(per, labels, refs, systems, cfg)
    summary.update({"command": "eval heldout", "data": str(source), "n": len(items)})
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(_example_rows(items, per, labels, systems), out / "per_example.jsonl")
    _plot(summary, out / "heldout_nll.png")
    write_result(summary, out / "heldout.json")  # last: a folder with heldout.json is complete
    summary["files"] = {"summary": str(out / "heldout.json"), "per_example": str(out / "per_example.jsonl"),
                        "plot": str(out / "heldout_nll.png")}
    return summary


def _summarise(per, labels, refs, systems, cfg: EvalConfig) -> dict:
    models = {}
    for label, ref in zip(labels, refs):
        models[label] = {"model": ref, "systems": {}}
        for system in systems:
            nll, tok = per[label][system]
            value = _mean_nll(nll, tok)
            ci = bootstrap_ci(lambda idx, nll=nll, tok=tok: _mean_nll(nll, tok, idx), len(nll), cfg.bootstrap,
                              cfg.confidence, cfg.seed)
            models[label]["systems"][system] = {
                "nll": value, "nll_ci": ci, "perplexity": math.exp(value) if value is not None else None,
                "tokens": int(tok.sum()), "examples": len(nll),
                "mean_example_nll": float(np.mean(nll / np.maximum(tok, 1))) if len(nll) else None,
            }
    differences = []
    for system in systems:
        for a, b in itertools.combinations(labels, 2):
            na, ta = per[a][system]
            nb, tb = per[b][system]

            def diff(idx=None, na=na, ta=ta, nb=nb, tb=tb):
                x, y = _mean_nll(nb, tb, idx), _mean_nll(na, ta, idx)
                return None if x is None or y is None else x - y

            per_a = na / np.maximum(ta, 1)
            per_b = nb / np.maximum(tb, 1)
            differences.append({
                "system": system, "a": a, "b": b, "nll_b_minus_a": diff(),
                "ci": bootstrap_ci(diff, len(na), cfg.bootstrap, cfg.confidence, cfg.seed),
                "b_better_fraction": float(np.mean(per_b < per_a)) if len(na) else None,
            })
    return {"models": models, "systems": list(systems), "differences": differences, "bootstrap": cfg.bootstrap,
            "confidence": cfg.confidence, "seed": cfg.seed}


def _example_rows(items, per, labels, systems):
    for i, it in enumerate(items):
        row = {"id": it.id, "instruction": it.instruction}
        for label in labels:
            for system in systems:
                nll, tok = per[label][system]
                row[f"{label}[{system}]"] = float(nll[i] / tok[i]) if tok[i] else None
        row["tokens"] = int(per[labels[0]][systems[0]][1][i])
        yield row


def _plot(summary: dict, path: Path) -> None:
    """Left: each model's NLL with its CI. Right: each model minus the first one, paired: per-model intervals
    are wide (examples differ a lot in difficulty) while paired differences are what tells models apart."""
    plt = pyplot()
    labels = list(summary["models"])
    systems = summary["systems"]
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(labels) + 3), 3.8))
    width = 0.8 / len(systems)
    x = np.arange(len(labels))
    lows, highs = [], []
    for k, system in enumerate(systems):
        vals, lo, hi = [], [], []
        for label in labels:
            s = summary["models"][label]["systems"][system]
            v = s["nll"] if s["nll"] is not None else float("nan")
            ci = s["nll_ci"] or [v, v]
            vals.append(v)
            lo.append(v - ci[0])
            hi.append(ci[1] - v)
            lows.append(ci[0])
            highs.append(ci[1])
        ax.bar(x + (k - (len(systems) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=3, label=system)
    finite = [v for v in lows + highs if not math.isnan(v)]
    if finite:
        span = max(finite) - min(finite)
        ax.set_ylim(max(0.0, min(finite) - 0.5 * span - 0.05), max(finite) + 0.2 * span + 0.05)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("NLL per token (lower is better)")
    ax.set_title(f"held-out NLL, {summary['n']} examples, {int(summary['confidence'] * 100)}% CI", fontsize=9)
    if len(systems) > 1:
        ax.legend(title="system", fontsize=8)
    first = labels[0]
    diffs = {(d["system"], d["b"]): d for d in summary["differences"] if d["a"] == first}
    for k, system in enumerate(systems):
        vals, lo, hi = [], [], []
        for label in labels[1:]:
            d = diffs.get((system, label))
            v = d["nll_b_minus_a"] if d and d["nll_b_minus_a"] is not None else float("nan")
            ci = (d or {}).get("ci") or [v, v]
            vals.append(v)
            lo.append(v - ci[0])
            hi.append(ci[1] - v)
        axd.bar(np.arange(len(labels) - 1) + (k - (len(systems) - 1) / 2) * width, vals, width, yerr=[lo, hi],
                capsize=3, label=system)
    axd.axhline(0, color="#888", lw=0.8)
    axd.set_xticks(np.arange(len(labels) - 1))
    axd.set_xticklabels(labels[1:], rotation=20, ha="right")
    axd.set_ylabel(f"NLL minus {first}")
    axd.set_title("paired difference (below 0: better)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def format_heldout_summary(summary: dict) -> str:
    systems = summary["systems"]
    head = (f"held-out NLL per token of {summary['n']} reference outputs from {summary['data']} "
            f"(lower is better; {int(summary['confidence'] * 100)}% bootstrap CI over examples)")
    lines = [head, ""]
    width = max(len(k) for k in summary["models"]) + 2
    lines.append(f"{'model':<{width}}" + "".join(f"{'system ' + s:<26}" for s in systems) + "tokens")
    for label, m in summary["models"].items():
        cells = "".join(f"{fmt_ci(m['systems'][s]['nll'], m['systems'][s]['nll_ci']):<26}" for s in systems)
        lines.append(f"{label:<{width}}{cells}{m['systems'][systems[0]]['tokens']}")
    if summary["differences"]:
        lines.append("")
        lines.append("paired differences (NLL of b minus a; negative: b is better)")
        for d in summary["differences"]:
            frac = "-" if d["b_better_fraction"] is None else f"{d['b_better_fraction']:.0%}"
            lines.append(f"  [{d['system']}] {d['b']} - {d['a']}: {fmt_ci(d['nll_b_minus_a'], d['ci'], 4)}"
                         f"  (b better on {frac} of examples)")
    if "files" in summary:
        lines.append(f"\nwrote {summary['files']['summary']}, {summary['files']['per_example']}, "
                     f"{summary['files']['plot']}")
    return "\n".join(lines)
