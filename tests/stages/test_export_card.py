"""The dataset card of `humpback export`: unit tests of render_card on a synthetic info dict (rounding, project
URL, escaping of hostile web text, examples, per-round table, limitations) and one real export of a tiny run."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from humpback.core.markdown import code, md_text, score, value
from humpback.stages.export_card import PAPER, example_rows, project_url, render_card
from runconfig import tiny_run_config

NASTY = [
    "Explain | this | table\nsecond line\r\n\n\n\nthird",
    "<script>alert('x')</script> <img src=x onerror=alert(1)> &amp; <details>",
    "```python\nimport os\n```\n~~~\nstill fenced?",
    "# heading\n---\n![tracker](https://evil.example/pixel.png) [click](javascript:alert(1)) $x^2$ *bold* _it_",
    "bidi \u202eevil\u202c zero\u200bwidth nul\x00 esc\x1b[31m line\u2028sep trailing backslash \\",
]


def _row(i: int, score, text: str, value=0.0) -> dict:
    return {"pair_id": f"p{i:02d}", "origin": "augmented" if score is not None else "seed", "round": 2,
            "score": score, "pmi": value, "expected_score": None, "instruction": f"Q{i}: {text}",
            "output": f"A{i}: {text} " + "lorem ipsum " * 60}


def _check(n=6, shuffled=0.8333333333, truncated=0.41666666667, boilerplate=1.0):
    return {"n": n, "auroc": shuffled, "threshold": 0.75, "mean_real": 0.123456, "mean_shuffled": -0.98765,
            "negatives": {"shuffled": {"auroc": shuffled, "mean": -0.98765},
                          "truncated": {"auroc": truncated, "mean": 0.4321},
                          "boilerplate": {"auroc": boilerplate, "mean": -3.14159}}}


def _round(r: int, model: str, **check) -> dict:
    return {"round": r, "model": model, "model_parameters": 4_621_440, "scorer": "humpback", "min_score": 2.0,
            "pairs_scored": 8, "selected": 7 - r, "tiers": {">=5": 1, ">=4": 2, ">=3": 4, ">=2": 7 - r, ">=1": 8},
            "histogram": {"1": 1, "2": 3, "3": 2, "4": 1, "5": 1, "null": 0}, "null_scores": {},
            "pmi_cuts": [0.1234, 0.25, 0.5, 0.75], "self_check": _check(**check), "plot": f"score_hist_r{r}.png"}


def _info(**changes) -> dict:
    rows = [_row(i, s, NASTY[i % len(NASTY)], value=v) for i, (s, v) in
            enumerate([(5.0, 0.2), (5.0, 0.9), (4.0, 0.5), (3.0, 0.1), (5.0, 0.9), (2.0, 0.0), (None, None)])]
    rounds = [_round(1, "/runs/t/models/m0"), _round(2, "/runs/t/models/m1", truncated=0.9, boilerplate=None)]
    stage = lambda s, **r: {"status": "done", "seconds": s, "result": r}  # noqa: E731
    train = dict(first_loss=2.3456789, final_loss=1.7263367176055908)
    info = {
        "source": "/runs/t", "curate_dir": "/runs/t/curate/r2", "round": 2, "min_score": 2.0, "rows": 7,
        "by_origin": {"augmented": 6, "seed": 1}, "excluded": 0, "exclude": [],
        "curate_stats": {k: v for k, v in rounds[1].items() if k not in ("round", "plot")} | {"input": "/x"},
        "curate_config": {"scorer": {"pmi_mapping": "quantile"}},
        "rounds": rounds,
        "run": {"name": "t", "base_model": "/models/tiny", "rounds": 2, "base_parameters": 4_621_440,
                "config_hash": "abc", "config": {"name": "t", "augment": {"generation": {"max_tokens": 12}}},
                "versions": {"transformers": "4.57.1"},
                "stages": {"prepare": stage(1.23456, documents_in=10, segments=20),
                           "backward": stage(12.3456, examples=11, steps=2, **train),
                           "m0": stage(3.0, examples=11, steps=2, **train),
                           "curate-r1": stage(4.56789, selected=6, scored=8, min_score=2.0, scorer="humpback",
                                              auroc=0.83333333),
                           "m1": stage(3.14159, examples=17, steps=2, **train),
                           "curate-r2": stage(4.0, selected=5, scored=8, min_score=2.0, scorer="humpback",
                                              auroc=0.83333333),
                           "m2": stage(2.0, examples=16, steps=2, **train)},
                "models": {"m1": {"batch_size": 2, "max_length": 384, "lora": None,
                                  "examples_by_origin": {"seed": 11, "augmented": 6}}}},
        "project_url": None,
    }
    info["examples"] = example_rows(rows)
    return info | changes


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end])


def _section(card: str, title: str) -> str:
    start = card.index(f"\n{title}\n")
    nxt = re.search(r"\n#{1,3} ", card[start + len(title) + 2:])
    return card[start:start + len(title) + 2 + (nxt.start() if nxt else len(card))]


def _table_rows(section: str) -> list[str]:
    return [ln for ln in section.splitlines() if ln.startswith("|")]


def _long_decimals(card: str) -> list[str]:
    return re.findall(r"\S*\d\.\d{5,}\S*", card.replace(PAPER, ""))


def _cells(line: str) -> int:
    """Number of cells of a table line, counting only unescaped pipes."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


# ---------------------------------------------------------------------------------------------- unit tests
def test_front_matter_is_valid_hub_yaml():
    card = render_card(_info(), license="cc-by-4.0", pretty_name="x: y --- 'z' # not a comment")
    meta = _front_matter(card)
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert "instruction-backtranslation" in meta["tags"] and meta["pretty_name"] == "x: y --- 'z' # not a comment"
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]


def test_numbers_are_rounded():
    card = render_card(_info())
    assert "1.7263367176055908" not in card and "0.8333333" not in card and "12.3456" not in card
    assert "2.346 → 1.726" in card  # losses: 3 decimals
    assert "| 12.3 |" in card and "| 1.2 |" in card  # seconds: 1 decimal
    assert "0.833" in card and "0.417 ⚠" in card  # AUROC: 3 decimals, weak ones marked
    assert "mean 0.12" in card and "| -0.99 |" in card  # scores: 2 decimals
    assert "4.6M parameters" in card
    assert not _long_decimals(card)


def test_project_url_is_linked_when_declared_and_never_invented():
    without = render_card(_info(project_url=None))
    assert "github.com" not in without and "](https://github" not in without
    assert "declares no project URL" in without
    with_url = render_card(_info(project_url="https://example.org/humpback"))
    assert "[humpback](https://example.org/humpback)" in with_url and "declares no project URL" not in with_url
    hostile = render_card(_info(project_url="javascript:alert(1)"))
    assert "javascript:alert(1))" not in hostile and "](javascript" not in hostile
    # the installed package: whatever its metadata says, never a made-up address
    url = project_url()
    from importlib import metadata

    meta = metadata.metadata("humpback")
    declared = [e.partition(",")[2].strip() for e in meta.get_all("Project-URL") or []] + [meta.get("Home-page")]
    assert url is None or url in declared


def test_five_examples_chosen_deterministically_and_cut():
    info = _info()
    ex = info["examples"]
    assert [e["pair_id"] for e in ex] == ["p01", "p04", "p00", "p02", "p03"]  # score, then value, then pair_id
    assert example_rows(list(reversed([dict(e) for e in _rows_of(info)]))) == example_rows(_rows_of(info))
    section = _section(render_card(info), "## Examples")
    rows = _table_rows(section)[2:]
    assert len(rows) == 5
    assert all(r.rstrip(" |").endswith("characters)*") for r in rows)  # outputs longer than 300 are cut
    assert all(len(r) < 1500 for r in rows)


def _rows_of(info):
    return [_row(i, s, NASTY[i % len(NASTY)], value=v) for i, (s, v) in
            enumerate([(5.0, 0.2), (5.0, 0.9), (4.0, 0.5), (3.0, 0.1), (5.0, 0.9), (2.0, 0.0), (None, None)])]


def test_seed_rows_top_up_the_examples():
    ex = example_rows([_row(1, None, "a"), _row(0, None, "b"), _row(2, 3.0, "c")])
    assert [e["pair_id"] for e in ex] == ["p02", "p00", "p01"]


def test_hostile_web_text_cannot_break_the_layout():
    card = render_card(_info())
    section = _section(card, "## Examples")
    rows = _table_rows(section)
    assert len(rows) == 7 and all(_cells(r) == 5 for r in rows), rows  # header, rule, 5 rows
    body = "\n".join(rows[2:])
    for bad in ("<script", "<img", "<details>", "```", "~~~", "![", "](", "\u202e", "\u200b", "\x00", "\x1b",
                "\u2028", "\r"):
        assert bad not in body, bad
    assert "&lt;script&gt;" in body and "\\|" in body and "<br>" in body and "\\$x^2\\$" in body
    assert "<br><br><br>" not in body
    # the rest of the card still has its sections after the examples
    for title in ("## Use", "## Columns", "## How it was made", "### Curation rounds", "## Limitations",
                  "## License"):
        assert f"\n{title}\n" in card, title
    assert card.count("<details>") == 1 and card.count("</details>") == 1


def test_md_text():
    assert md_text("a|b\nc") == "a\\|b<br>c"
    assert md_text("x" * 10, 4) == "xxxx…"
    assert md_text("\n\n a \n\n\n\nb\n") == "a <br><br>b"
    assert md_text(None) == ""
    assert code("a`b") == "``a`b``" and code("`x`") == "`` `x` ``" and code("a|b", table=True) == "`a\\|b`"
    assert code("x\ny\u202e") == "`x y`"
    assert value(0.00031) == "3.1e-04" and value(-0.98765) == "-0.99" and value(0.0) == "0.00"
    assert score(5.0) == "5" and score(4.25) == "4.25" and score(None) == "–"


def test_per_round_table():
    card = render_card(_info())
    section = _section(card, "### Curation rounds")
    rows = _table_rows(section)
    header = rows[0]
    for col in ("round", "scored by", "scorer", "pairs scored", "selected", "tiers", "AUROC shuffled",
                "AUROC truncated", "AUROC boilerplate"):
        assert col in header, col
    assert len(rows) == 4 and all(_cells(r) == _cells(header) for r in rows)
    r1, r2 = rows[2], rows[3]
    assert "models/m0 (4.6M)" in r1 and "models/m1" in r2 and "/runs/t" not in r1
    assert "6 (score ≥ 2)" in r1 and "1 / 2 / 4 / 6 / 8" in r1 and "0.417 ⚠" in r1
    assert r2.startswith("| **2** |") and "0.900" in r2 and "n/a" in r2
    assert "![round 1 scores](score_hist_r1.png)" in section and "![round 2 scores](score_hist_r2.png)" in section
    assert "![score histogram" in card and "(score_hist.png)" in card and "(lengths.png)" in card


def test_limitations_section():
    card = render_card(_info())
    lim = _section(card, "## Limitations")
    assert "`/models/tiny` (4.6M parameters" in lim
    assert "backward 2 steps on 11 examples" in lim and "m2 2 steps on 16 examples" in lim
    assert "not a judgment of correctness" in lim and "quantiles of this run" in lim
    assert "round 1 (n=6): shuffled 0.833, truncated 0.417, boilerplate 1.000" in lim
    assert "treat its tiers with caution" in lim and "rough estimates" in lim
    assert "Nobody reviewed these pairs" in lim and "machine" in lim and "web text" in lim
    assert "no exclusion list was applied" in lim
    models = _section(card, "### Models and training budgets")
    assert "seed 11, augmented 6" in models and "| 384 |" in models


def test_code_spans_hold_names_with_backticks_and_underscores():
    info = _info()
    info["run"]["base_model"] = "/models/my_`odd`_model"
    card = render_card(info, license="my_license")
    assert "base model `` /models/my_`odd`_model ``" in card or "base model ``/models/my_`odd`_model``" in card
    assert "`my_license`" in card and "my\\_license" not in card


def test_rubric_scorer_and_curate_only_source():
    info = _info()
    for rd in info["rounds"]:
        rd["scorer"] = "rubric"
        rd["model_parameters"] = None
    info["curate_stats"]["scorer"] = "rubric"
    info["run"] = None
    info["exclude"] = ["flagged.jsonl"]
    info["excluded"] = 3
    card = render_card(info)
    lim = _section(card, "## Limitations")
    assert "LM judge's 1–5 score" in lim and "quantiles" not in lim
    assert "parameter count unknown" in lim and "training budgets of the models are not known" in lim
    assert "1 exclusion file(s) were removed (3 rows)" in lim
    assert _front_matter(card)["license"] == "other"


def test_skipped_self_check():
    info = _info()
    for rd in info["rounds"]:
        rd["self_check"] = {"skipped": True, "reason": "only 2 pairs"}
    info["curate_stats"]["self_check"] = {"skipped": True, "reason": "only 2 pairs"}
    card = render_card(copy.deepcopy(info))
    assert "Not run (only 2 pairs)" in card and "round 1: not run (only 2 pairs)" in card
    rows = _table_rows(_section(card, "### Curation rounds"))
    assert all(_cells(r) == _cells(rows[0]) for r in rows)


# ---------------------------------------------------------------------------------------------- a real export
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    from humpback.loop import run_loop

    from humpback.stages.prepare.quickstart import build_quickstart_corpus

    tmp = tmp_path_factory.mktemp("card")
    build_quickstart_corpus(tmp / "quickstart.jsonl")  # its first 24 documents are enough for 8 segments
    lines = (tmp / "quickstart.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp / "corpus.jsonl").write_text("\n".join(lines[:24]) + "\n", encoding="utf-8")
    # the cheapest run with two curate rounds: one training step, one candidate, one chunk per stage, and the
    # pmi scorer (no sentence embedder to load; the humpback scorer's card text is unit-tested above)
    cfg = tiny_run_config(tmp, tiny_model_dir, **{
        "evaluate.backward": False, "train.max_steps": 1, "export.enabled": False, "augment.candidates": 1,
        "augment.chunk_size": 8, "curate.chunk_size": 8, "curate.scorer.kind": "pmi"})
    run_loop(cfg, run_dir=str(tmp / "run"), until="curate-r2")  # M2 is not needed for the card
    return tmp / "run"


def test_card_of_a_real_tiny_export(tiny_run, tmp_path, tiny_model_dir):
    from humpback.engines.openai_compat import count_parameters
    from humpback.stages.export import export_dataset

    out = tmp_path / "ds"
    result = export_dataset(tiny_run, out, with_seed=True, license="cc-by-4.0", pretty_name="tiny card")
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(card)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "tiny card"
    assert "](https://github.com/)" not in card
    for png in ("score_hist.png", "lengths.png", "score_hist_r1.png", "score_hist_r2.png"):
        assert f"]({png})" in card and (out / png).stat().st_size > 1000, png
    rounds = _table_rows(_section(card, "### Curation rounds"))
    assert len(rounds) == 4 and "models/m0" in rounds[2] and "models/m1" in rounds[3]
    assert "AUROC truncated" in rounds[0] and "AUROC boilerplate" in rounds[0]
    examples = _table_rows(_section(card, "## Examples"))
    assert len(examples) == 2 + min(5, result.rows) and all(_cells(r) == 5 for r in examples)
    n = count_parameters(tiny_model_dir)
    lim = _section(card, "## Limitations")
    assert f"{n / 1e6:.1f}M parameters" in lim and "1 step on" in lim
    assert not _long_decimals(card.split("<details>")[0])
    info = json.loads((out / "humpback_export.json").read_text())
    assert [r["round"] for r in info["rounds"]] == [1, 2] and len(info["examples"]) == min(5, result.rows)
