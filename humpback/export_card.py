"""The dataset card (README.md with Hub YAML metadata) of a `humpback export`."""

from __future__ import annotations

import json
from typing import Any, Optional

import yaml

from . import __version__


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _stage_rows(run: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, st in run["stages"].items():
        r = st.get("result") or {}
        if name == "prepare":
            what = f"{r.get('documents_in')} documents → {r.get('segments')} segments"
        elif name == "seed":
            what = f"{r.get('written')} seed pairs ({r.get('heldout')} held out for evaluation)"
        elif name == "augment":
            what = f"{r.get('pairs_written')} candidate pairs kept of {r.get('pairs_generated')} generated"
        elif name.startswith("curate"):
            auroc = r.get("auroc")
            what = (f"{r.get('selected')} of {r.get('scored')} pairs with score ≥ {r.get('min_score')}, scored by "
                    f"`{r.get('model')}` ({r.get('scorer')})"
                    + (f"; self-check AUROC {auroc:.3f}" if auroc is not None else ""))
        elif name == "backward" or (name.startswith("m") and name[1:].isdigit()):
            what = f"{r.get('examples')} examples, {r.get('steps')} steps, final loss {r.get('final_loss')}"
        elif name == "corpus":
            what = f"{r.get('documents')} documents"
        else:
            continue
        rows.append([name, st.get("status"), st.get("seconds"), what])
    return rows


def render_card(info: dict[str, Any], license: str = "other", pretty_name: Optional[str] = None) -> str:
    rows = info["rows"]
    run = info.get("run")
    stats = info.get("curate_stats", {})
    meta = {
        "license": license,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["instruction-backtranslation", "humpback", "synthetic", "instruction-tuning"],
        "size_categories": [size_category(rows)],
        "pretty_name": pretty_name or "humpback instruction backtranslation data",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    }
    check = stats.get("self_check") or {}
    auroc = check.get("auroc")
    parts = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {meta['pretty_name']}", "",
             f"{rows} instruction–response pairs made by [humpback](https://github.com/) {__version__} with "
             "instruction backtranslation (Li et al., 2023, *Self-Alignment with Instruction Backtranslation*): a "
             "backward model wrote an instruction for each web-text segment, and a forward model scored every "
             f"candidate pair; this export keeps the pairs with score ≥ {info['min_score']:g}.", ""]
    origin = info.get("by_origin", {})
    parts += [f"Rows by origin: {', '.join(f'{k} {v}' for k, v in origin.items()) or 'none'}. "
              f"Excluded as flagged (e.g. decontamination): {info.get('excluded', 0)}.", ""]

    parts += ["## Use", "", "```python", "from datasets import load_dataset", "",
              'ds = load_dataset("<this repo or folder>", split="train")',
              'ds[0]["messages"]  # system tag + user instruction + assistant response', "```", ""]

    parts += ["## Columns", "", _table(["column", "meaning"], [
        ["messages", "chat form: system tag (\"Answer with knowledge from web search.\" for augmented rows, "
                     "\"Answer in the style of an AI Assistant.\" for seed rows), user, assistant"],
        ["instruction / output", "the pair; `output` is the web segment for augmented rows"],
        ["score", "curation score 1–5 (null for seed rows)"],
        ["score_probs, expected_score", "rubric scorer: probability of each score 1..5 and its mean"],
        ["pmi", "pmi scorer: per-token log p(output | instruction) − log p(output); humpback scorer: its blended "
                "value (docs/eval.md), mapped to `score` by quantiles"],
        ["origin, round", "augmented (curation round N) or seed (round 0)"],
        ["pair_id, segment_id, doc_id, url", "provenance of the segment in the source corpus"],
        ["backward_model, scorer, scorer_model, gen_params", "what generated and scored the pair"],
    ]), ""]

    parts += ["## How it was made", ""]
    if run:
        cfg = run.get("config") or {}
        parts += [f"- run `{run.get('name')}`: base model `{run.get('base_model')}`, {run.get('rounds')} "
                  f"curation round(s); config hash `{run.get('config_hash')}`",
                  f"- this export: round {info['round']} (scored by `{stats.get('model')}`)",
                  f"- scorer: `{stats.get('scorer')}`; selection: score ≥ {info['min_score']:g}",
                  f"- augment sampling: {json.dumps((cfg.get('augment') or {}).get('generation'))}", "",
                  "### Counts and time per stage", "",
                  _table(["stage", "status", "seconds", "result"], _stage_rows(run)), ""]
        versions = run.get("versions") or {}
        parts += ["Package versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    else:
        parts += [f"- curated with `{stats.get('model')}` ({stats.get('scorer')}), from pairs in "
                  f"`{stats.get('input')}`", f"- selection: score ≥ {info['min_score']:g}", ""]

    parts += ["### Scores", "", "![score histogram](score_hist.png)", "",
              _table(["score", *stats.get("histogram", {}).keys()],
                     [["pairs", *stats.get("histogram", {}).values()]]) if stats.get("histogram") else "", "",
              "![lengths](lengths.png)", ""]

    parts += ["### Scorer self-check", ""]
    if auroc is not None:
        verdict = ("the scorer separates real pairs from shuffled ones" if auroc >= check.get("threshold", 0.75)
                   else "**the scorer barely separates real from shuffled pairs: treat the tiers with caution**")
        parts += [f"AUROC of scores on {check.get('n')} real pairs vs the same pairs with shuffled instructions: "
                  f"**{auroc:.3f}** (mean real {check.get('mean_real')}, shuffled {check.get('mean_shuffled')}); "
                  f"{verdict}.", ""]
    else:
        parts += [f"Not run ({check.get('reason') or 'disabled'}).", ""]

    parts += ["## License and limitations", "",
              f"Card license field: `{license}`. Augmented outputs are text segments of the source corpus and keep "
              "its licenses (see `url`/`doc_id`); instructions were written by a small model and may be wrong or "
              "vague even when scored highly. Scores come from a model, not from people.", ""]
    if run:
        parts += ["<details><summary>Full run config</summary>", "", "```yaml",
                  yaml.safe_dump(run.get("config"), sort_keys=False).strip(), "```", "", "</details>", ""]
    return "\n".join(parts)
