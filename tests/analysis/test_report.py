"""`humpback report RUN`: what the page says about a real tiny-model run and about a partial one, the CLI's
one-line error for a folder that is no run, and the page itself in headless Chromium (Debian's ``chromium``,
driven by Playwright): no console errors, no requests beyond the file itself, one table row per candidate
pair, search and sort that work, and pair text with markup in it shown as text, never run."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from humpback.cli import main
from humpback.loop import run_loop
from humpback.core.records import PAIR_SCHEMA, parquet_files, to_table
from humpback.analysis.report import write_report
from runconfig import tiny_run_config

CHROMIUM = os.environ.get("HUMPBACK_CHROMIUM", "/usr/bin/chromium")
# the flags keep a fresh Chromium from calling home (component updates, sync, field trials) during the test
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MARK = "zebra-marker"  # a word that only the injected rows contain, to search for
INJECTED = f'<script>alert(1)</script><img src=x onerror="alert(2)"> {MARK}'
REJECTED_SCHEMA = PAIR_SCHEMA.append(pa.field("reject_reason", pa.string()))


def _count(folder: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(folder)) if folder.is_dir() else 0


def _pair(pair_id: str, instruction: str, output: str) -> dict:
    return {"pair_id": pair_id, "instruction": instruction, "output": output, "segment_id": "s", "doc_id": "d",
            "url": "file:///x", "backward_model": "m", "gen_params": "{}", "round": 0, "candidates": None}


def _inject(root: Path) -> None:
    """Untrusted text where the page shows it: a kept pair's instruction and output, rejected pairs."""
    first = parquet_files(root / "augment" / "pairs")[0]
    table = pq.read_table(first)
    rows = table.to_pylist()
    rows[0]["instruction"] = INJECTED
    rows[0]["output"] = "</script><script>alert(3)</script> <!-- " + rows[0]["output"]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), first)
    extra = [{**_pair(f"rej{i}", f"Tell me number {i}", "Some web text " * 30), "reject_reason": "not_a_request"}
             for i in range(3)]
    extra += [{**_pair("rej-x", INJECTED, "</td></tr></table><b>bold</b>"), "reject_reason": "not_a_request"},
              {**_pair("rej-e", "", "an empty instruction"), "reject_reason": "empty_instruction"}]
    (root / "augment" / "rejected").mkdir(exist_ok=True)
    pq.write_table(to_table(extra, REJECTED_SCHEMA), root / "augment" / "rejected" / "99999.parquet")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished tiny run (one round, no export: what the report reads, and quicker) with untrusted text."""
    tmp = tmp_path_factory.mktemp("report")
    changes = {"rounds": 1, "export.enabled": False, "augment.candidates": 1, "curate.scorer": {"kind": "pmi"}}
    run_loop(tiny_run_config(tmp, tiny_model_dir, **changes), run_dir=str(tmp / "run"))
    root = tmp / "run"
    _inject(root)
    return root


@pytest.fixture(scope="module")
def report_file(report_run) -> Path:
    return write_report(report_run)


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="pair-data">(.*?)</script>', page, re.S)
    assert m, "no pair data block"
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------------------- contents
def test_report_lists_every_stage_round_check_and_pair(report_run, report_file):
    assert report_file == report_run / "report.html"
    page = report_file.read_text(encoding="utf-8")
    manifest = json.loads((report_run / "manifest.json").read_text())
    for stage in manifest["stage_order"]:
        assert f"<td>{stage}</td>" in page
    assert page.count('class="st-done"') == len(manifest["stage_order"])
    stats = json.loads((report_run / "curate" / "r1" / "stats.json").read_text())
    assert f"scorer <code>{stats['scorer']}</code>" in page
    for kind in ("shuffled", "truncated", "boilerplate"):
        auroc = stats["self_check"]["negatives"][kind]["auroc"]
        assert f"<td>{kind}</td>" in page and f">{auroc:.3f}</span>" in page
    warning = stats["self_check"].get("warning")  # a random model's pmi is usually told off
    assert warning is None or f"WARNING: {html.escape(warning)}" in page
    assert "<td>seed-heldout</td>" in page and "relevance_auroc_human" in page  # backward figures
    assert page.count("data:image/png;base64,") >= 3  # histogram, lengths, backward plot
    assert "missing" not in re.findall(r'class="(\w+)"', page)  # a finished run misses nothing
    # every candidate pair, kept and rejected, is a row of the table's data
    kept, rejected = _count(report_run / "augment" / "pairs"), _count(report_run / "augment" / "rejected")
    rows = _data(page)["rows"]
    assert kept == 8 and len(rows) == kept + rejected
    assert sum(1 for r in rows if r[5] == "rejected") == rejected
    assert all(isinstance(r[4], (int, float)) for r in rows if r[5] != "rejected")  # every kept pair scored
    # three examples of the four not_a_request rejects, and the one empty_instruction
    assert "<code>not_a_request</code>: 4 pair(s)" in page and "<code>empty_instruction</code>: 1 pair(s)" in page
    # untrusted text is escaped everywhere: our two <script> elements are the only ones
    assert page.count("<script") == 2 and "<b>bold</b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert any(r[0] == INJECTED for r in rows)  # ... and the data keeps the exact text


def test_cli_writes_the_report_where_asked(report_run, tmp_path):
    out = tmp_path / "sub" / "r.html"
    result = CliRunner().invoke(main, ["report", str(report_run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out) and out.read_text().startswith("<!DOCTYPE html>")


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    for target in (tmp_path, tmp_path / "nope"):
        result = CliRunner().invoke(main, ["report", str(target)])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {target}: "), result.output
    assert "not a humpback run folder (no manifest.json)" in CliRunner().invoke(main, ["report", str(tmp_path)]).output
    assert not (tmp_path / "report.html").exists()


def test_partial_run_says_what_is_missing(tmp_path):
    """A run stopped in curate-r1: the stages so far, the pairs without scores, and notes for the rest."""
    root = tmp_path / "run"
    order = ["prepare", "seed", "backward", "eval-backward", "augment", "m0", "curate-r1", "m1"]
    done = {"status": "done", "seconds": 1.5, "result": {}}
    stages = {n: dict(done) for n in order[:6]}
    stages["augment"]["result"] = {"segments_in": 3, "pairs_generated": 3, "pairs_written": 2,
                                   "dropped": {"copies_segment": 1}}
    stages["curate-r1"] = {"status": "running", "started": 1.0}
    stages["m0"] = {"status": "failed", "seconds": 0.5, "error": "TrainingError: <no examples>"}
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "m0.log").write_text("Traceback ...\n")
    (root / "manifest.json").write_text(json.dumps({"kind": "humpback", "config": {"name": "part", "rounds": 1},
                                                    "stage_order": order, "stages": stages}))
    (root / "augment" / "pairs").mkdir(parents=True)
    pq.write_table(to_table([_pair("a", "How do I water basil?", "Water it when the soil is dry."),
                             _pair("b", "What is a <b>?", "A tag.")], PAIR_SCHEMA),
                   root / "augment" / "pairs" / "00000.parquet")
    page = write_report(root, tmp_path / "out.html").read_text()
    assert "This run is not finished: m0 (failed), curate-r1 (running), m1 (pending)." in page
    assert "TrainingError: &lt;no examples&gt; (log: RUN/logs/m0.log)" in page
    assert "No curate round has written RUN/curate/rN yet (curate-r1: running)." in page
    assert "stage eval-backward is done" in page  # done, yet its folder is gone: said, not a crash
    assert "dropped: copies_segment 1" in page
    rows = _data(page)["rows"]
    assert [r[5] for r in rows] == ["not scored yet"] * 2 and "<b>?" not in page
    assert "No candidate pair was rejected." in page
    # only a manifest: every section says what is missing
    shutil.rmtree(root / "augment")
    page = write_report(root, tmp_path / "bare.html").read_text()
    assert "No RUN/augment/pairs yet" in page and 'id="pair-data"' not in page


# ------------------------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"BROWSER TESTS NOT RUN: no Chromium at {CHROMIUM}; `make browser-deps` installs Debian's "
                    "chromium (needs root and apt-get), or set HUMPBACK_CHROMIUM to a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("BROWSER TESTS NOT RUN: Playwright for Python is missing; pip install -e '.[dev]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def opened(chromium, report_file):
    """The report in a fresh page, with everything the page logs, loads or pops up recorded."""
    page = chromium.new_page()
    seen: dict[str, list] = {"console": [], "errors": [], "requests": [], "failed": [], "dialogs": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("requestfailed", lambda r: seen["failed"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(report_file.as_uri(), wait_until="load")
    yield page, seen
    page.close()


def _visible(page) -> int:
    return page.locator("#pair-table tbody tr:not([hidden])").count()


def test_page_loads_nothing_else_and_logs_no_error(opened, report_file):
    page, seen = opened
    page.wait_for_timeout(200)  # let late errors and requests arrive
    assert seen["console"] == [] and seen["errors"] == [] and seen["failed"] == []
    own = (report_file.as_uri(), page.url)
    assert [u for u in seen["requests"] if u not in own and not u.startswith("data:")] == []
    assert seen["dialogs"] == []
    assert page.title() == "humpback report: t"
    images = page.locator("img")
    assert images.count() >= 3
    assert all(page.evaluate("img => img.complete && img.naturalWidth > 0", images.nth(i).element_handle())
               for i in range(images.count()))


def test_pair_table_has_every_pair_and_search_filters_it(opened, report_run):
    page, seen = opened
    total = _count(report_run / "augment" / "pairs") + _count(report_run / "augment" / "rejected")
    assert page.locator("#pair-table tbody tr").count() == total and _visible(page) == total
    assert page.locator("#pair-count").inner_text() == f"{total} of {total} pairs"
    page.fill("#pair-search", MARK)  # the kept pair and the rejected pair with the injected instruction
    assert _visible(page) == 2 and page.locator("#pair-count").inner_text() == f"2 of {total} pairs"
    page.fill("#pair-search", "NOT_A_REQUEST")  # case does not matter; the reason column is searched
    assert _visible(page) == 4
    page.fill("#pair-search", "not_a_request rej-x")  # every word must match (pair ids are searched too)
    assert _visible(page) == 1
    page.fill("#pair-search", "")
    assert _visible(page) == total
    assert seen["console"] == [] and seen["errors"] == []


def test_clicking_a_header_sorts(opened):
    page, seen = opened
    score = page.locator("#pair-table th", has_text="score")

    def scores() -> list[str]:
        return page.locator("#pair-table tbody tr td:nth-child(5)").all_inner_texts()

    score.click()
    assert score.get_attribute("aria-sort") == "ascending"
    got = scores()
    numbers = [float(s) for s in got if s]
    assert numbers == sorted(numbers) and len(numbers) == 8 and got[:8] == [s for s in got if s]  # blanks last
    score.click()
    assert score.get_attribute("aria-sort") == "descending"
    numbers = [float(s) for s in scores() if s]
    assert numbers == sorted(numbers, reverse=True)
    chars = page.locator("#pair-table th", has_text="output chars")
    chars.click()
    assert score.get_attribute("aria-sort") == "none" and chars.get_attribute("aria-sort") == "ascending"
    lengths = [int(s) for s in page.locator("#pair-table tbody tr td:nth-child(4)").all_inner_texts()]
    assert lengths == sorted(lengths)
    assert seen["console"] == [] and seen["errors"] == []


def test_markup_in_pairs_shows_as_text_and_never_runs(opened):
    page, seen = opened
    page.fill("#pair-search", MARK)
    cells = page.locator("#pair-table tbody tr:not([hidden]) td:nth-child(1)").all_inner_texts()
    assert cells == [INJECTED, INJECTED]
    assert "</script><script>alert(3)</script>" in page.locator("#pair-table tbody").inner_text()
    assert INJECTED in page.locator("#rejected").inner_text()  # the server-side examples too
    markup = "#pair-table script, #pair-table img, #rejected script, #rejected img, b"
    assert page.evaluate(f"document.querySelectorAll('{markup}').length") == 0
    assert page.evaluate("document.scripts.length") == 2
    assert seen["dialogs"] == [] and seen["console"] == [] and seen["errors"] == []
