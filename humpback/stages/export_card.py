"""The dataset card (README.md with Hub YAML metadata) of a `humpback export`.

`render_card` only formats: `humpback.stages.export.export_dataset` gathers what it shows (``info``: counts, every
curate round's stats, the models' sizes and training budgets, five example rows) and also writes it to
humpback_export.json. Text that comes from the corpus (instructions, outputs, warnings quoting them) goes through
`md_text`, so that pipes, newlines, HTML, code fences or Markdown links in web text cannot break the card.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Optional, Sequence

import yaml

from .. import __version__
from ..core.markdown import DASH, TRAINING, code, count, fence, g, md_text, num, params, score, steps, value

PAPER = "[arXiv:2308.06259](https://arxiv.org/abs/2308.06259)"
EXAMPLES = 5
EXAMPLE_CHARS = 300  # of each example's output (and at most this much of its instruction)
SMALL_CHECK = 20  # a self-check on fewer pairs is a rough estimate


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Cells are written as given (already escaped) except None, which becomes "–"."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(DASH if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _link(label: str, url: Optional[str]) -> str:
    if url and re.fullmatch(r"https?://[^\s()<>\[\]`\"']+", url):
        return f"[{label}]({url})"
    return label


# ---------------------------------------------------------------------------------------------- gathering
def project_url(dist: str = "humpback") -> Optional[str]:
    """The project's URL as its installed metadata declares it (Home-page, else a Project-URL, preferring a
    homepage/source one); None when it declares none: the card then says so instead of linking anywhere."""
    from importlib import metadata

    from .prepare.quickstart import distribution_url

    try:
        meta = metadata.metadata(dist)
    except metadata.PackageNotFoundError:
        return None
    home = (meta.get("Home-page") or "").strip()
    declared = (home and home.upper() != "UNKNOWN") or any(
        entry.partition(",")[2].strip() for entry in meta.get_all("Project-URL") or [])
    return distribution_url(meta, dist) if declared else None


def _finer(row: dict[str, Any]) -> float:
    """The continuous value behind a 1-5 score (pmi/humpback blend, or the rubric's expected score)."""
    for key in ("pmi", "expected_score"):
        v = row.get(key)
        if isinstance(v, (int, float)) and not math.isnan(v):
            return float(v)
    return 0.0


def example_rows(rows: Sequence[dict[str, Any]], n: int = EXAMPLES) -> list[dict[str, Any]]:
    """The ``n`` highest-scored rows (score, then the continuous value behind it, then pair_id), topped up with
    seed rows by pair_id; instruction and output cut to EXAMPLE_CHARS (their full lengths kept)."""
    scored = sorted((r for r in rows if r.get("score") is not None),
                    key=lambda r: (-r["score"], -_finer(r), str(r.get("pair_id"))))
    rest = sorted((r for r in rows if r.get("score") is None), key=lambda r: str(r.get("pair_id")))
    out = []
    for r in (scored + rest)[:n]:
        ins, outp = r.get("instruction") or "", r.get("output") or ""
        out.append({"pair_id": r.get("pair_id"), "origin": r.get("origin"), "round": r.get("round"),
                    "score": r.get("score"), "value": r.get("pmi") if r.get("pmi") is not None
                    else r.get("expected_score"),
                    "instruction": ins[:EXAMPLE_CHARS + 1], "instruction_chars": len(ins),
                    "output": outp[:EXAMPLE_CHARS + 1], "output_chars": len(outp)})
    return out


# ---------------------------------------------------------------------------------------------- sections
KIND_TEXT = {
    "shuffled": "the output with another pair's instruction",
    "neighbor": "the instruction with the most similar other pair's output (on topic, answers another question)",
    "truncated": "the instruction with its output cut short",
    "boilerplate": "the instruction with page furniture (cookie banners, navigation, footers) as the output",
    "web-voice": "the instruction with the closest corpus page on its topic, written as a page, not an answer",
}


def _stage_rows(run: dict[str, Any]) -> list[list[Any]]:
    from ..core.results import card_row  # it formats with this module's helpers

    rows = []
    for name, st in run["stages"].items():
        what = card_row(name, st.get("result"))
        if what is not None:
            rows.append([md_text(name), md_text(st.get("status")), num(st.get("seconds"), 1), what])
    return rows


def _short_model(ref: Any, run_dir: Optional[str], as_code: bool = False) -> str:
    """A model of the run as its path inside the run folder (models/m0), anything else as given."""
    s = str(ref or "")
    if run_dir and s:
        base, full = os.path.abspath(run_dir), os.path.abspath(s)
        if full.startswith(base + os.sep):
            s = os.path.relpath(full, base)
    if not s:
        return DASH
    return code(s) if as_code else md_text(s)


def _kinds(rounds: Sequence[dict[str, Any]]) -> list[str]:
    kinds: dict[str, None] = {}
    for rd in rounds:
        chk = rd.get("self_check") or {}
        for k in (chk.get("negatives") or ({"shuffled": {}} if chk.get("auroc") is not None else {})):
            kinds[k] = None
    return list(kinds)


def _auroc_of(chk: dict[str, Any], kind: str) -> Any:
    neg = chk.get("negatives") or {}
    if kind in neg:
        return (neg[kind] or {}).get("auroc")
    return chk.get("auroc") if kind == "shuffled" else "missing"


def _auroc_cell(chk: dict[str, Any], kind: str) -> str:
    if not chk or chk.get("skipped") or chk.get("auroc") is None and not chk.get("negatives"):
        return DASH
    v = _auroc_of(chk, kind)
    if v == "missing":
        return DASH
    if v is None:
        return "n/a"
    return num(v, 3) + (" ⚠" if v < chk.get("threshold", 0.75) else "")


def _rounds_section(rounds: Sequence[dict[str, Any]], run_dir: Optional[str], export_round: Any) -> list[str]:
    kinds = _kinds(rounds)
    header = ["round", "scored by", "scorer", "pairs scored", "selected", "tiers ≥5 / ≥4 / ≥3 / ≥2 / ≥1",
              "self-check n", *(f"AUROC {md_text(k)}" for k in kinds)]
    rows = []
    for rd in rounds:
        tiers = rd.get("tiers") or {}
        chk = rd.get("self_check") or {}
        model = _short_model(rd.get("model"), run_dir)
        if rd.get("model_parameters"):
            model += f" ({params(rd['model_parameters']).replace(' parameters', '')})"
        rows.append([f"**{rd.get('round')}**" if rd.get("round") == export_round else rd.get("round"), model,
                     md_text(rd.get("scorer")), count(rd.get("pairs_scored")),
                     f"{count(rd.get('selected'))} (score ≥ {g(rd.get('min_score'))})",
                     " / ".join(count(tiers.get(f">={k}")) for k in (5, 4, 3, 2, 1)) if tiers else DASH,
                     count(chk.get("n")) if chk.get("n") is not None else DASH,
                     *(_auroc_cell(chk, k) for k in kinds)])
    threshold = next(((rd.get("self_check") or {}).get("threshold") for rd in rounds
                      if (rd.get("self_check") or {}).get("threshold") is not None), 0.75)
    out = ["### Curation rounds", "",
           "Round N scores the same candidate pairs with the model trained in round N−1 (M0 on seed pairs only); "
           f"this export is round {md_text(export_round)} (in bold). Self-check: AUROC of the scorer's values on a "
           "sample of real pairs against typed negatives built from them (0.5 = chance, 1 = perfect); "
           f"⚠ marks a value below {num(threshold, 2)}.", "", _table(header, rows), ""]
    if kinds:
        out += ["Negative kinds: " + "; ".join(f"*{md_text(k)}*: {KIND_TEXT.get(k, 'see humpback eval negatives')}"
                                               for k in kinds) + ".", ""]
    plots = [rd for rd in rounds if rd.get("plot")]
    if plots:
        out += [" ".join(f"![round {rd.get('round')} scores]({rd['plot']})" for rd in plots), ""]
    return out


def _guard_section(run: dict[str, Any], export_round: Any) -> list[str]:
    """The per-round table of the collapse guard (humpback.guard): each forward model on held-out human outputs
    and its tier's diversity; empty for a run without eval-m stages."""
    from ..guard import SYSTEM, round_rows  # it imports the evaluation helpers

    stopped = set(run.get("stopped") or ())
    results = {n: st.get("result") for n, st in run["stages"].items() if n not in stopped}
    header, rows = round_rows(results, export_round, (run.get("result") or {}).get("stopped_after"))
    if not rows:
        return []
    out = ["### Forward models on held-out human outputs", "",
           f"Per-token NLL of held-out human outputs under each round's model (system prompt `{SYSTEM}`), with 95% "
           "bootstrap intervals; Δ previous is the paired difference to the round before (above 0: worse; "
           "*worse* when its whole interval is above 0). Tier: the curated pairs the model trained on and their "
           "instruction diversity (humpback eval diversity).", "",
           _table([md_text(h) for h in header], [[md_text(c) for c in row] for row in rows]), ""]
    reason = (run.get("result") or {}).get("reason")
    if reason:
        out += [f"The run stopped early (loop.stop_on_regression): {md_text(reason)}", ""]
    return out


def _role(name: str, rounds: int) -> str:
    if name == "backward":
        return "M_yx: writes an instruction for each web segment (seed pairs reversed)"
    r = int(name[1:])
    trained = "seed pairs" if r == 0 else f"seed + round-{r} tier"
    use = f"scores round {r + 1}" if r < rounds else "the final model"
    return f"M{r}: {trained}; {use}"


def _models_section(run: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = []
    for name, st in run["stages"].items():
        if not TRAINING.match(name):
            continue
        r = st.get("result") or {}
        hp = (run.get("models") or {}).get(name) or {}
        by_origin = hp.get("examples_by_origin") or {}
        examples = count(r.get("examples"))
        if by_origin:
            examples += " (" + ", ".join(f"{md_text(k)} {count(v)}" for k, v in by_origin.items()) + ")"
        rows.append([md_text(name), _role(name, run.get("rounds") or 0), examples, count(r.get("steps")),
                     count(hp.get("batch_size")), count(hp.get("max_length")),
                     ("LoRA" if hp.get("lora") else "full") if hp else DASH,
                     f"{num(r.get('first_loss'), 3)} → {num(r.get('final_loss'), 3)}", num(st.get("seconds"), 1)])
    return ["model", "role", "examples", "steps", "batch", "max tokens", "fine-tuning", "loss first → last",
            "seconds"], rows


SCORER_TEXT = {
    "humpback": ("a fixed linear blend of likelihood features under the scoring model (forward and reverse "
                 "pointwise mutual information of instruction and output, the probability that the answer ends "
                 "where the output ends, the output's own likelihood) plus the embedding cosine of instruction "
                 "and output: a likelihood-based measure of relevance under a small model, **not a judgment of "
                 "correctness**, helpfulness, safety or style"),
    "pmi": ("the mean per-token log p(output | instruction) − log p(output) under the scoring model: a "
            "likelihood-based measure of relevance under a small model, **not a judgment of correctness**, "
            "helpfulness, safety or style"),
    "rubric": ("an LM judge's 1–5 score on the paper's rubric (read from the judge's next-token probabilities of "
               "the digits 1–5): one model's opinion, not a person's, and as good as that model is"),
    "rubric-generate": ("an LM judge's 1–5 score on the paper's rubric, parsed from its written reasoning "
                        "(`Score: N`; unparseable answers get no score): one model's opinion, not a person's"),
}


def _scorer_lines(rounds: Sequence[dict[str, Any]], curate_config: Optional[dict[str, Any]]) -> list[str]:
    kinds = list(dict.fromkeys(str(rd.get("scorer")) for rd in rounds if rd.get("scorer")))
    lines = []
    for kind in kinds or ["unknown"]:
        text = SCORER_TEXT.get(kind, "see the humpback documentation for this scorer")
        lines.append(f"- **What the score measures** ({code(kind)} scorer): {text}.")
        if kind in ("humpback", "pmi"):
            mapping = ((curate_config or {}).get("scorer") or {}).get("pmi_mapping", "quantile")
            cuts = next((rd.get("pmi_cuts") for rd in rounds if rd.get("pmi_cuts")), None)
            cut_text = f" (cut points {', '.join(value(c) for c in cuts)})" if cuts else ""
            lines.append(
                "  The 1–5 `score` is that value mapped by " + (
                    f"quantiles of this run's own values{cut_text}: a 5 means *among the most relevant pairs of "
                    "this corpus for this model*, not an absolute grade, and every run has its 5s."
                    if mapping == "quantile" else f"fixed thresholds{cut_text}."))
    return lines


def _self_check_lines(rounds: Sequence[dict[str, Any]]) -> list[str]:
    parts, weak, rough = [], False, False
    for rd in rounds:
        chk = rd.get("self_check") or {}
        if chk.get("auroc") is None and not chk.get("negatives"):
            parts.append(f"round {md_text(rd.get('round'))}: not run ({md_text(chk.get('reason') or 'disabled')})")
            continue
        threshold = chk.get("threshold", 0.75)
        vals = {k: _auroc_of(chk, k) for k in (chk.get("negatives") or {"shuffled": None})}
        weak = weak or any(v is None or v == "missing" or v < threshold for v in vals.values())
        rough = rough or (chk.get("n") or 0) < SMALL_CHECK
        parts.append(f"round {md_text(rd.get('round'))} (n={count(chk.get('n'))}): "
                     + ", ".join(f"{md_text(k)} {'n/a' if v is None or v == 'missing' else num(v, 3)}"
                                 for k, v in vals.items()))
    line = "- **Self-check**: " + "; ".join(parts) + "."
    if weak:
        line += (" Values below the threshold mean the scorer does not reliably rank real pairs above those "
                 "negatives: **treat its tiers with caution**.")
    if rough:
        line += f" Samples under {SMALL_CHECK} pairs make these AUROCs rough estimates."
    return [line]


def _limitations(info: dict[str, Any], run: Optional[dict[str, Any]], rounds: Sequence[dict[str, Any]]) -> list[str]:
    out = ["## Limitations", ""]
    if run:
        n = run.get("base_parameters")
        out.append(f"- **Model sizes**: every model of this run was fine-tuned from {code(run.get('base_model'))} "
                   f"({params(n)}, counted from its safetensors headers); the scoring model of each round is listed "
                   "above." + (" Models this small write vaguer instructions and score less reliably than the "
                               "7B–65B LLaMA models of the paper." if n and n < 7e9 else ""))
        budgets = []
        for name, st in run["stages"].items():
            if TRAINING.match(name):
                r = st.get("result") or {}
                budgets.append(f"{md_text(name)} {steps(r.get('steps'))} on {count(r.get('examples'))} examples")
        if budgets:
            out.append(f"- **Training budgets**: {'; '.join(budgets)} (per model, from the run manifest). Judge "
                       "the instructions' quality with these budgets in mind.")
    else:
        sizes = "; ".join(f"round {md_text(rd.get('round'))}: {code(rd.get('model'))} "
                          f"({params(rd.get('model_parameters'))})" for rd in rounds)
        out.append(f"- **Model sizes**: scoring model {sizes}. This export was made from a curate output, not a "
                   "run folder, so the training budgets of the models are not known here.")
    out += _scorer_lines(rounds, info.get("curate_config"))
    out += _self_check_lines(rounds)
    out.append("- **Nobody reviewed these pairs.** The augmented instructions were written by a machine (the "
               "backward model) for segments of web text, and the outputs are that web text as found: they may be "
               "wrong, outdated, biased, contain personal data or page boilerplate the filters missed, and an "
               "instruction may be vague or not answered by its output even at score 5.")
    if info.get("exclude"):
        out.append(f"- **Decontamination**: pairs listed in {len(info['exclude'])} exclusion file(s) were removed "
                   f"({count(info.get('excluded', 0))} rows).")
    else:
        out.append("- **Decontamination**: no exclusion list was applied to this export; check overlap with your "
                   "evaluation sets (`humpback eval decontam`, then `humpback export --exclude`).")
    out.append("")
    return out


def _examples_section(examples: Sequence[dict[str, Any]]) -> list[str]:
    if not examples:
        return []
    rows = []
    for i, ex in enumerate(examples, 1):
        where = f"{md_text(ex.get('origin'))} r{md_text(ex.get('round'))}"
        shown = score(ex.get("score")) + (f" ({value(ex.get('value'))})" if ex.get("value") is not None else "")
        output = md_text(ex.get("output"), EXAMPLE_CHARS)
        if (ex.get("output_chars") or 0) > EXAMPLE_CHARS:
            output += f" *({count(ex['output_chars'])} characters)*"
        rows.append([i, shown, where, md_text(ex.get("instruction"), EXAMPLE_CHARS), output])
    return ["## Examples", "",
            f"The {len(examples)} highest-scored rows (by score, then the scorer's continuous value in brackets, then "
            "pair_id; seed rows after them), not a random sample. Outputs are cut to their first "
            f"{EXAMPLE_CHARS} characters; text is shown escaped, as plain text.", "",
            _table(["#", "score", "origin", "instruction", f"output (first {EXAMPLE_CHARS} characters)"], rows), ""]


def _self_check_section(check: dict[str, Any]) -> list[str]:
    out = ["### Scorer self-check", ""]
    auroc = check.get("auroc")
    if auroc is None and not check.get("negatives"):
        return out + [f"Not run ({md_text(check.get('reason') or 'disabled')}).", ""]
    threshold = check.get("threshold", 0.75)
    negatives = check.get("negatives") or {"shuffled": {"auroc": auroc, "mean": check.get("mean_shuffled")}}
    rows = []
    for k, v in negatives.items():
        a = (v or {}).get("auroc")
        verdict = ("n/a" if a is None else "separates" if a >= threshold
                   else "**barely separates: treat the tiers with caution**" if a >= 0.5
                   else "**ranks these negatives above real pairs: treat the tiers with caution**")
        rows.append([md_text(k), KIND_TEXT.get(k, DASH), num(a, 3), value((v or {}).get("mean")), verdict])
    out += [f"Scores of {count(check.get('n'))} real pairs of this round (mean {value(check.get('mean_real'))}) "
            "against the same pairs made bad in known ways:", "",
            _table(["negative", "what it is", "AUROC", "mean value", f"verdict (threshold {num(threshold, 2)})"],
                   rows), ""]
    if check.get("warning"):
        out += [f"> ⚠ {md_text(check['warning'])}", ""]
    return out


# ---------------------------------------------------------------------------------------------- the card
def render_card(info: dict[str, Any], license: str = "other", pretty_name: Optional[str] = None) -> str:
    rows = info["rows"]
    run = info.get("run")
    stats = info.get("curate_stats") or {}
    rounds = info.get("rounds") or [{"round": info.get("round"), **stats, "plot": None}]
    run_dir = info.get("source") if run else None
    meta = {
        "license": license,
        "language": ["en"],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["found", "machine-generated"],
        "multilinguality": ["monolingual"],
        "task_categories": ["text-generation"],
        "tags": ["instruction-backtranslation", "humpback", "synthetic", "instruction-tuning"],
        "size_categories": [size_category(rows)],
        "pretty_name": pretty_name or "humpback instruction backtranslation data",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    }
    url = info.get("project_url")
    linked = _link("humpback", url)
    made_by = (f"{linked} {md_text(__version__)}" if linked != "humpback"
               else f"humpback {md_text(__version__)} (its package metadata declares no project URL)")
    parts = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {md_text(meta['pretty_name'])}", "",
             f"{count(rows)} instruction–response pairs made by {made_by} with instruction "
             f"backtranslation (Li et al., 2023, *Self-Alignment with Instruction Backtranslation*, {PAPER}): a "
             "backward model wrote an instruction for each web-text segment, and a forward model scored every "
             f"candidate pair; this export keeps the pairs with score ≥ {info['min_score']:g}.", ""]
    origin = info.get("by_origin", {})
    parts += [f"Rows by origin: {', '.join(f'{md_text(k)} {count(v)}' for k, v in origin.items()) or 'none'}. "
              f"Excluded as flagged (e.g. decontamination): {count(info.get('excluded', 0))}. "
              "Read the [limitations](#limitations) before training on it.", ""]

    parts += _examples_section(info.get("examples") or [])

    parts += ["## Use", "", "```python", "from datasets import load_dataset", "",
              'ds = load_dataset("<this repo or folder>", split="train")',
              'ds[0]["messages"]  # system tag + user instruction + assistant response', "```", ""]

    parts += ["## Columns", "", _table(["column", "meaning"], [
        ["messages", "chat form: system tag (\"Answer with knowledge from web search.\" for augmented rows, "
                     "\"Answer in the style of an AI Assistant.\" for seed rows), user, assistant"],
        ["instruction / output", "the pair; `output` is the web segment for augmented rows"],
        ["score", "curation score 1–5 (null for seed rows)"],
        ["score_probs, expected_score", "rubric scorer: probability of each score 1..5 and its mean"],
        ["pmi", "pmi scorer: per-token log p(output \\| instruction) − log p(output); humpback scorer: its blended "
                "value (docs/eval.md), mapped to `score` by quantiles"],
        ["origin, round", "augmented (curation round N) or seed (round 0)"],
        ["pair_id, segment_id, doc_id, url", "provenance of the segment in the source corpus"],
        ["backward_model, scorer, scorer_model, gen_params", "what generated and scored the pair"],
    ]), ""]

    parts += ["## How it was made", ""]
    if run:
        cfg = run.get("config") or {}
        gen = json.dumps((cfg.get("augment") or {}).get("generation"), sort_keys=True)
        parts += [f"- run {code(run.get('name'))}: base model {code(run.get('base_model'))} "
                  f"({params(run.get('base_parameters'))}), {count(run.get('rounds'))} curation round(s); config "
                  f"hash {code(run.get('config_hash'))}",
                  f"- this export: round {md_text(info['round'])} (scored by "
                  f"{_short_model(stats.get('model'), run_dir, as_code=True)})",
                  f"- scorer: {code(stats.get('scorer'))}; selection: score ≥ {info['min_score']:g}",
                  f"- augment sampling: {code(gen)}", ""]
    else:
        parts += [f"- curated with {code(stats.get('model'))} ({md_text(stats.get('scorer'))}), from pairs in "
                  f"{code(stats.get('input'))}", f"- selection: score ≥ {info['min_score']:g}", ""]
    parts += _rounds_section(rounds, run_dir, info.get("round"))
    if run:
        parts += _guard_section(run, info.get("round"))
        header, model_rows = _models_section(run)
        if model_rows:
            parts += ["### Models and training budgets", "", _table(header, model_rows), ""]
        parts += ["### Counts and time per stage", "",
                  _table(["stage", "status", "seconds", "result"], _stage_rows(run)), ""]
        versions = run.get("versions") or {}
        parts += ["Package versions: " + ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in versions.items()), ""]

    hist = stats.get("histogram") or {}
    parts += ["### Scores of the exported round", "",
              "![score histogram: all scored pairs and the exported ones](score_hist.png)", ""]
    if hist:
        parts += [_table(["score", *(md_text(k) for k in hist)], [["pairs", *(count(v) for v in hist.values())]]), ""]
    parts += ["![instruction and output lengths of the exported rows](lengths.png)", ""]
    parts += _self_check_section(stats.get("self_check") or {})

    parts += _limitations(info, run, rounds)

    parts += ["## License", "",
              f"Card license field: {code(license)}. Augmented outputs are text segments of the source corpus "
              "and keep its licenses (see `url`/`doc_id`); instructions were written by a model. Scores come from "
              "a model, not from people.", ""]
    if run:
        parts += ["<details><summary>Full run config</summary>", "",
                  *fence(yaml.safe_dump(run.get("config"), sort_keys=False, allow_unicode=True).strip(), "yaml"),
                  "", "</details>", ""]
    return "\n".join(parts)
