"""`humpback report RUN`: one self-contained HTML page about a run, to open in a browser or attach to a message.

It shows what the manifest knows (every stage's status, time, counts and drops by reason), each curate round's
score histogram, tiers and scorer self-check, the backward model's figures on held-out pairs, length plots, a
few rejected pairs per reason, and a table of every candidate pair (kept and rejected) with its newest score,
tier and reject reason, which a search box filters and column headers sort.

Nothing in the page is fetched: styles and the script are inline, pictures are PNG data URIs, and a
Content-Security-Policy forbids any other load. Pairs are untrusted web text, so every text is escaped, the
table's data travels as JSON that the script only ever puts into ``textContent``, and the policy lets only the
page's own script run (by its hash), so a ``<script>`` smuggled into a pair could not execute even if some
escaping were missed. A partial run gets a partial report that says what is missing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow.parquet as pq

from ..loop import Layout
from ..core.records import atomic_path, parquet_files, read_json
from ..core.runs import MANIFEST, RunError, StageRecord
from ..core.results import describe, fig

OUTPUT_CHARS = 200  # start of each output shown in the pair table
EXAMPLES_PER_REASON = 3
# A paper-sized run has hundreds of thousands of candidates; past this the page would be too big to open,
# so the table keeps the first ones and says so.
MAX_PAIRS = 50_000
METRICS = ("acceptance", "relevance_auroc", "relevance_auroc_human", "recovery", "similarity")
DROP_KEYS = ("dropped", "null_scores")  # the stage results' counts by reason


def write_report(run_dir: str | os.PathLike, output: Optional[str | os.PathLike] = None,
                 max_pairs: int = MAX_PAIRS) -> Path:
    """Write the report of ``run_dir`` to ``output`` (default RUN/report.html) and return its path."""
    root = Path(run_dir)
    view = RunView.open(root)
    out = Path(output) if output is not None else root / "report.html"
    page = render(view, max_pairs=max_pairs)
    with atomic_path(out, suffix=".html") as tmp:  # a half-written page is never left under the final name
        tmp.write_text(page, encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------- reading
@dataclasses.dataclass
class RunView:
    """A run folder read without writing to it: ``runs.Run`` saves its manifest when it is constructed, and a
    report must not touch a run that may still be going."""

    root: Path
    manifest: dict[str, Any]
    stages: dict[str, StageRecord]
    order: list[str]

    @classmethod
    def open(cls, root: Path) -> RunView:
        if not root.is_dir():
            raise RunError(f"{root}: no such run folder")
        if not (root / MANIFEST).is_file():
            raise RunError(f"{root}: not a humpback run folder (no {MANIFEST}); give the folder that "
                           "`humpback run` wrote, e.g. runs/quickstart")
        manifest = read_json(root / MANIFEST)
        known = {f.name for f in dataclasses.fields(StageRecord)}
        stages = {name: StageRecord(**{k: v for k, v in rec.items() if k in known} | {"name": name})
                  for name, rec in (manifest.get("stages") or {}).items()}
        order = list(manifest.get("stage_order") or [])
        order += [name for name in stages if name not in order]  # stages of an earlier config, e.g. more rounds
        return cls(root, manifest, stages, order)

    @property
    def lay(self) -> Layout:
        return Layout(self.root)

    def status(self, name: str) -> str:
        if name in (self.manifest.get("stopped") or ()):
            return "stopped"  # not run after the collapse guard's early stop (humpback.guard)
        rec = self.stages.get(name)
        return rec.status if rec else "pending"

    def curate_rounds(self) -> list[tuple[int, Path]]:
        found = [(int(d.name[1:]), d) for d in (self.root / "curate").glob("r*") if d.name[1:].isdigit()]
        return sorted(found)


def _read_rows(folder: Path, columns: list[str]) -> list[dict]:
    if not folder.is_dir():
        return []
    rows = []
    for f in parquet_files(folder):
        have = pq.read_schema(f).names
        rows += pq.read_table(f, columns=[c for c in columns if c in have]).to_pylist()
    return rows


def _number(v: Any) -> Optional[float]:
    # NaN and infinities are not JSON, and JSON.parse would refuse the whole table over one of them
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _null_reason(rationale: Optional[str]) -> str:
    # curate writes "[reason] ..." as the rationale of a pair it could not score (humpback.stages.curate._finalise)
    rat = rationale or ""
    return rat[1:rat.index("]")] if rat.startswith("[") and "]" in rat else "no_score"


def _tier(score: Optional[float], min_score: Optional[float]) -> str:
    if score is None:
        return "unscored"
    tier = f">={int(math.floor(score))}"  # the cumulative tiers of curate's stats.json (>=5, >=4, ...)
    return tier + (" curated" if min_score is not None and score >= min_score else "")


def _start(text: Optional[str], n: int = OUTPUT_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= n else flat[:n] + "…"


# ----------------------------------------------------------------------------------------------- page parts
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _png_img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _table(head: Optional[Iterable[str]], rows: Iterable[Iterable[Any]], cls: str = "") -> str:
    """A small server-side table (no header row when ``head`` is None); cells are escaped unless ``Html``."""
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out += ["<thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c if isinstance(c, Html) else _e(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Html(str):
    """Markup this module built itself (escaped already), which ``_table`` puts in as it is."""


def _counts(d: Optional[dict]) -> str:
    if not d:
        return ""
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-(kv[1] or 0), kv[0])))


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if isinstance(ts, (int, float)) else "-"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _overview(view: RunView) -> str:
    m, cfg = view.manifest, view.manifest.get("config") or {}
    done = [n for n in view.order if view.status(n) == "done"]
    rows = [("run folder", view.root), ("kind", m.get("kind")), ("name", cfg.get("name")),
            ("base model", cfg.get("base_model")), ("rounds", cfg.get("rounds")),
            ("config", m.get("config_source")), ("config hash", m.get("config_hash")),
            ("created", _when(m.get("created"))), ("manifest updated", _when(m.get("updated"))),
            ("versions", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())),
            ("stages done", f"{len(done)} of {len(view.order)}")]
    body = _table(None, rows, "facts")
    left = [f"{n} ({view.status(n)})" for n in view.order if view.status(n) not in ("done", "stopped")]
    if left:
        body += _missing("This run is not finished: " + ", ".join(left) + ". Sections below show what exists.")
    warnings = [(n, rec.result.get("warning")) for n, rec in view.stages.items() if (rec.result or {}).get("warning")]
    body += "".join(f'<p class="warning">WARNING {_e(n)}: {_e(w)}</p>' for n, w in warnings)
    return _section("overview", "Run", body)


def _stage_table(view: RunView) -> str:
    rows, total = [], 0.0
    for name in view.order:
        rec = view.stages.get(name)
        result = (rec.result if rec else None) or {}
        total += (rec.seconds or 0) if rec else 0
        drops = "; ".join(f"{k.replace('_', ' ')}: {_counts(result[k])}" for k in DROP_KEYS
                          if isinstance(result.get(k), dict) and result[k])
        try:
            what = describe(name, result)
        except (KeyError, TypeError, ValueError, AttributeError):
            # a result of another humpback version (or another kind of run): its raw figures beat no report
            what = json.dumps(result, default=str)[:300]
        if rec and rec.error:
            what = f"{what} {rec.error}".strip()
            log = view.root / "logs" / f"{name}.log"  # where a quiet run keeps what the stage printed
            what += f" (log: RUN/logs/{name}.log)" if log.is_file() else ""
        status = view.status(name)
        rows.append((name, Html(f'<span class="st-{_e(status)}">{_e(status)}</span>'),
                     "-" if not rec or rec.seconds is None else f"{rec.seconds:.1f}", what, drops))
    rows.append(("total", "", f"{total:.1f}", "", ""))
    return _section("stages", "Stages (RUN/manifest.json)",
                    _table(["stage", "status", "seconds", "result", "dropped by reason"], rows, "stages"))


def _curate(view: RunView) -> str:
    from ..stages.curate import histogram_png

    rounds = view.curate_rounds()
    if not rounds:
        names = [n for n in view.order if n.startswith("curate-r")]
        return _section("curate", "Curation", _missing(
            "No curate round has written RUN/curate/rN yet (" +
            (", ".join(f"{n}: {view.status(n)}" for n in names) or "no curate stage in this run") + ")."))
    parts = []
    for r, folder in rounds:
        if not (folder / "stats.json").is_file():
            parts.append(f"<h3>round {r}</h3>" + _missing(f"{folder}/stats.json is missing: stage curate-r{r} is "
                                                          f"{view.status(f'curate-r{r}')}."))
            continue
        st = read_json(folder / "stats.json")
        model = Path(str(st.get("model") or "?")).name
        head = (f"<h3>round {r}: scorer <code>{_e(st.get('scorer'))}</code>, model <code>{_e(model)}</code></h3>"
                f"<p>{_e(st.get('selected'))} of {_e(st.get('pairs_scored'))} pairs selected "
                f"(score &gt;= {_e(st.get('min_score'))})"
                + (f"; null scores: {_e(_counts(st.get('null_scores')))}" if st.get("null_scores") else "") + "</p>")
        hist = st.get("histogram") or {}
        pic = _png_img(histogram_png(hist, f"r{r}: {st.get('scorer')} scores ({model})"),
                       f"round {r} score histogram") if hist else _missing("no histogram in stats.json")
        tiers = _table(["tier", "pairs"], (st.get("tiers") or {}).items(), "small")
        parts.append(head + f'<div class="row">{pic}<div>{tiers}</div><div>{_self_check(st)}</div></div>')
    found = {f"curate-r{r}" for r, _ in rounds}
    for name in (n for n in view.order if n.startswith("curate-r") and n not in found):
        parts.append(_missing(f"No RUN/curate/r{name.split('-r')[1]} yet: stage {name} is {view.status(name)}."))
    return _section("curate", "Curation (RUN/curate/rN/stats.json)", "".join(parts))


def _self_check(stats: dict) -> str:
    chk = stats.get("self_check") or {}
    if chk.get("skipped") or not chk:
        return "<h4>scorer self-check</h4>" + _missing(f"skipped{': ' + chk['reason'] if chk.get('reason') else ''}")
    threshold = chk.get("threshold")
    negatives = chk.get("negatives") or {"shuffled": {"auroc": chk.get("auroc"), "mean": chk.get("mean_shuffled")}}
    rows = []
    for kind, v in negatives.items():
        a = v.get("auroc")
        weak = a is None or (threshold is not None and a < threshold)
        cell = Html(f'<span class="{"bad" if weak else "good"}">{"n/a" if a is None else f"{a:.3f}"}</span>')
        rows.append((kind, cell, chk.get("n"), "-" if v.get("mean") is None else f"{v['mean']:.3f}"))
    body = (f"<h4>scorer self-check (real vs negatives; warn below {_e(threshold)})</h4>"
            + _table(["negative kind", "AUROC", "n", "mean score of negatives"], rows, "small selfcheck"))
    if chk.get("warning"):
        body += f'<p class="warning">WARNING: {_e(chk["warning"])}</p>'
    return body


def _rounds(view: RunView) -> str:
    """The collapse guard's per-round table (humpback.guard.round_rows), as the summary and the card show it."""
    from ..guard import round_rows

    stopped = set(view.manifest.get("stopped") or ())
    result = view.manifest.get("result") or {}
    header, rows = round_rows({n: rec.result for n, rec in view.stages.items() if n not in stopped},
                              result.get("round"), result.get("stopped_after"))
    if not rows:
        return _section("rounds", "Forward models", _missing("No eval-mN stage has finished (evaluate.forward)."))
    note = f'<p class="warning">Stopped early: {_e(result.get("reason"))}</p>' if result.get("stopped_after") else ""
    return _section("rounds", "Forward models on held-out human outputs",
                    "<p>Per-token NLL with 95% bootstrap intervals; Δ previous: the paired difference to the round "
                    "before (above 0: worse).</p>" + _table(header, rows, "small") + note)


def _backward(view: RunView) -> str:
    folder = view.lay.eval / "backward"
    files = sorted(folder.glob("*/backward_eval.json")) if folder.is_dir() else []
    if not files:
        why = ("evaluate.backward is off" if "eval-backward" not in view.order
               else f"stage eval-backward is {view.status('eval-backward')}")
        return _section("backward", "Backward model", _missing(f"No RUN/eval/backward/<set>/backward_eval.json "
                                                                f"({why})."))
    rows, extra = [], []
    for f in files:
        s = read_json(f)
        rows.append((f.parent.name, s.get("n"), s.get("k"), *(fig(s.get(m)) for m in METRICS)))
        by_k = s.get("by_k") or {}
        if len(by_k) > 1:
            extra.append(f"<h4>{_e(f.parent.name)}: best-of-k' from the same samples</h4>" + _table(
                ["k", *METRICS], ((k, *(fig(v.get(m)) for m in METRICS)) for k, v in by_k.items()), "small"))
        if s.get("rejected"):
            extra.append(f"<p>{_e(f.parent.name)}: candidates rejected by reason: {_e(_counts(s['rejected']))}</p>")
        png = f.parent / "backward_eval.png"
        if png.is_file():
            extra.append(_png_img(png.read_bytes(), f"{f.parent.name} backward evaluation"))
    body = ("<p>humpback eval backward on held-out human pairs; 95% bootstrap intervals.</p>"
            + _table(["set", "n", "k", *METRICS], rows, "small") + "".join(extra))
    return _section("backward", "Backward model (RUN/eval/backward)", body)


def _lengths(view: RunView) -> str:
    from .stats import find_sets, stats_png

    sets = []
    for name in ("pairs", "rejected"):
        folder = view.lay.augment / name
        if folder.is_dir() and any(pq.read_metadata(f).num_rows for f in parquet_files(folder)):
            sets += [dataclasses.replace(ds, name=f"augment/{name}") for ds in find_sets(folder)]
    if not sets:
        return _section("lengths", "Lengths", _missing(f"No candidate pairs yet (stage augment is "
                                                        f"{view.status('augment')})."))
    return _section("lengths", "Lengths of candidate pairs (characters)",
                    _png_img(stats_png(sets), "instruction and output lengths"))


def _rejected_examples(rejected: list[dict]) -> str:
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for r in rejected:
        by_reason[r.get("reject_reason") or "?"].append(r)
    if not by_reason:
        return _section("rejected", "Rejected examples", "<p>No candidate pair was rejected.</p>")
    parts = []
    for reason, rows in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = sorted(rows, key=lambda r: r.get("pair_id") or "")[:EXAMPLES_PER_REASON]
        parts.append(f"<h3><code>{_e(reason)}</code>: {len(rows)} pair(s)</h3>" + _table(
            ["instruction", "output (start)"],
            ((_start(r.get("instruction"), 500), _start(r.get("output"))) for r in shown), "examples"))
    return _section("rejected", f"Rejected examples (up to {EXAMPLES_PER_REASON} per reason, RUN/augment/rejected)",
                    "".join(parts))


COLUMNS = [  # the pair table: key, header, type (how the script sorts it), width
    ("instruction", "instruction", "text", "30%"), ("output", "output (start)", "text", "38%"),
    ("instruction_chars", "instr. chars", "num", "6em"), ("output_chars", "output chars", "num", "6em"),
    ("score", "score", "num", "4.5em"), ("tier", "tier", "text", "8em"), ("reason", "reject reason", "text", "11em"),
]


def _pair_rows(view: RunView, kept: list[dict], rejected: list[dict]) -> tuple[list[list], str]:
    """Rows of the pair table (in COLUMNS order, then pair_id) and a sentence about where scores come from."""
    scored = [(r, d) for r, d in view.curate_rounds() if (d / "scores").is_dir() and parquet_files(d / "scores")]
    scores: dict[str, dict] = {}
    note = "No curate round has scored the pairs yet."
    min_score = None
    if scored:
        r, folder = scored[-1]  # the newest round: what the last model thinks of each pair
        scores = {s["pair_id"]: s for s in _read_rows(folder / "scores", ["pair_id", "score", "rationale"])}
        stats = read_json(folder / "stats.json") if (folder / "stats.json").is_file() else {}
        min_score = stats.get("min_score")
        note = (f"Scores and tiers from curate round {r} (scorer {stats.get('scorer', '?')}, "
                f"{Path(str(stats.get('model') or '?')).name}); 'curated' marks score >= {min_score}.")
    rows = []
    for p in kept:
        s = scores.get(p["pair_id"])
        score = _number(s["score"]) if s else None
        reason = "" if s is None or score is not None else f"unscored: {_null_reason(s.get('rationale'))}"
        rows.append(_row(p, score, _tier(score, min_score) if s else "not scored yet", reason))
    for p in rejected:
        rows.append(_row(p, None, "rejected", p.get("reject_reason") or "?"))
    return rows, note


def _row(p: dict, score: Optional[float], tier: str, reason: str) -> list:
    return [p.get("instruction") or "", _start(p.get("output")), len(p.get("instruction") or ""),
            len(p.get("output") or ""), score, tier, reason, p.get("pair_id") or ""]


def _pairs(view: RunView, kept: list[dict], rejected: list[dict], max_pairs: int) -> tuple[str, str]:
    """The pair table section and its JSON data block."""
    if not (view.lay.augment / "pairs").is_dir():
        return _section("pairs", "Candidate pairs", _missing(
            f"No RUN/augment/pairs yet (stage augment is {view.status('augment')}).")), ""
    rows, note = _pair_rows(view, kept, rejected)
    cut = ""
    if len(rows) > max_pairs:
        cut = f" The table holds the first {max_pairs} of {len(rows)} candidate pairs (max_pairs)."
        rows = rows[:max_pairs]
    data = {"columns": [{"key": k, "label": label, "type": t} for k, label, t, _ in COLUMNS], "rows": rows}
    cols = "".join(f'<col style="width: {w}">' for *_, w in COLUMNS)
    head = "".join(f'<th data-col="{i}" data-type="{t}" aria-sort="none" tabindex="0">{_e(label)}</th>'
                   for i, (_, label, t, _) in enumerate(COLUMNS))
    body = (f"<p>{len(kept)} kept (RUN/augment/pairs) and {len(rejected)} rejected (RUN/augment/rejected) candidate "
            f"pairs. {_e(note)}{_e(cut)} Click a column header to sort; the box filters rows on every column.</p>"
            '<p><input type="search" id="pair-search" placeholder="filter pairs (instruction, output, tier, reason, '
            'pair id)" aria-label="filter pairs" size="60"> <span id="pair-count"></span></p>'
            f'<div class="scroll"><table id="pair-table" class="pairs"><colgroup>{cols}</colgroup>'
            f"<thead><tr>{head}</tr></thead><tbody></tbody></table></div>")
    return _section("pairs", "Every candidate pair", body), _script_json(data)


def _script_json(obj: Any) -> str:
    # Inside <script> the HTML parser ends the element at "</script" and changes state at "<!--", whatever the
    # JSON means; \u-escaping <, > and & keeps the JSON identical for JSON.parse and the element closed.
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


# ----------------------------------------------------------------------------------------------- the page
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.facts td:first-child { font-weight: 600; white-space: nowrap; }
table.stages td:nth-child(3) { text-align: right; }
table.pairs { width: 100%; table-layout: fixed; }
table.pairs th { cursor: pointer; position: sticky; top: 0; user-select: none; }
table.pairs th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.pairs th[aria-sort="descending"]::after { content: " \\25BC"; }
table.pairs td { word-wrap: break-word; overflow-wrap: anywhere; white-space: pre-wrap; }
table.pairs td:nth-child(2) { font-size: 12px; color: #444; }
div.scroll { max-height: 80vh; overflow: auto; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.missing { color: #8a6d00; background: #fff8db; padding: 4px 8px; }
.warning { color: #a00; font-weight: 600; }
.bad { color: #a00; font-weight: 600; } .good { color: #070; }
.st-done { color: #070; } .st-failed { color: #a00; font-weight: 600; } .st-running { color: #a60; }
.st-pending { color: #888; }
code { background: #f3f3f3; padding: 0 3px; }
img { max-width: 100%; }
"""

# Builds the pair table from the JSON block. Texts only ever go into textContent, never innerHTML.
SCRIPT = """
(function () {
  "use strict";
  var block = document.getElementById("pair-data");
  var table = document.getElementById("pair-table");
  if (!block || !table) { return; }
  var data = JSON.parse(block.textContent);
  var body = table.tBodies[0];
  var search = document.getElementById("pair-search");
  var count = document.getElementById("pair-count");
  var idKey = data.columns.length;
  var items = data.rows.map(function (row, index) {
    var tr = document.createElement("tr");
    tr.title = "pair " + row[idKey];
    data.columns.forEach(function (col, i) {
      var td = document.createElement("td");
      td.textContent = row[i] === null ? "" : String(row[i]);
      tr.appendChild(td);
    });
    return {tr: tr, row: row, index: index, text: row.join("\\u0001").toLowerCase()};
  });
  var fragment = document.createDocumentFragment();
  items.forEach(function (it) { fragment.appendChild(it.tr); });
  body.appendChild(fragment);

  function showCount() {
    var shown = 0;
    items.forEach(function (it) { if (!it.tr.hidden) { shown += 1; } });
    count.textContent = shown + " of " + items.length + " pairs";
  }
  search.addEventListener("input", function () {
    var words = search.value.toLowerCase().split(/\\s+/).filter(Boolean);
    items.forEach(function (it) {
      it.tr.hidden = !words.every(function (w) { return it.text.indexOf(w) !== -1; });
    });
    showCount();
  });

  function compare(i, numeric, dir) {
    return function (a, b) {
      var x = a.row[i], y = b.row[i];
      if (x === null || x === "") { return (y === null || y === "") ? a.index - b.index : 1; }  // blanks last
      if (y === null || y === "") { return -1; }
      var c = numeric ? x - y : String(x).localeCompare(String(y));
      return c !== 0 ? c * dir : a.index - b.index;
    };
  }
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th) {
    function sort() {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      items.sort(compare(Number(th.dataset.col), th.dataset.type === "num", dir));
      var f = document.createDocumentFragment();
      items.forEach(function (it) { f.appendChild(it.tr); });
      body.appendChild(f);
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { sort(); } });
  });
  showCount();
}());
"""


def render(view: RunView, max_pairs: int = MAX_PAIRS) -> str:
    """The whole page as one string."""
    lay = view.lay
    pair_cols = ["pair_id", "instruction", "output"]
    kept = _read_rows(lay.augment / "pairs", pair_cols)
    rejected = _read_rows(lay.augment / "rejected", [*pair_cols, "reject_reason"])
    pairs_section, data = _pairs(view, kept, rejected, max_pairs)
    rejected_section = (_rejected_examples(rejected) if (lay.augment / "pairs").is_dir() else
                        _section("rejected", "Rejected examples", _missing("No augment output yet.")))
    sections = [_overview(view), _stage_table(view), _rounds(view), _curate(view), _backward(view), _lengths(view),
                rejected_section, pairs_section]
    # the policy allows this page's own script (by hash) and nothing else: no network, no injected script
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    name = (view.manifest.get("config") or {}).get("name") or view.root.name
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("stages", "stages"), ("rounds", "forward models"), ("curate", "curation"), ("backward", "backward model"),
        ("lengths", "lengths"),
        ("rejected", "rejected examples"), ("pairs", "every pair")))
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # or the browser asks the folder for favicon.ico
        f"<title>humpback report: {_e(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>humpback run report: {_e(name)}</h1>",
        f"<p>Written {_e(_when(time.time()))} by <code>humpback report</code> from {_e(view.root)}.</p>",
        f"<nav>{nav}</nav>", *sections,
        f'<script type="application/json" id="pair-data">{data}</script>' if data else "",
        f"<script>{SCRIPT}</script></body></html>\n",
    ])


__all__ = ["write_report", "render", "RunView"]
