"""Seed import (JSONL / Parquet / HF / oasst1), held-out split, stats, build_seed and the quickstart corpus."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from humpback.cli import main
from humpback.core.config import ConfigError
from humpback.stages.prepare.quickstart import (
    build_quickstart_corpus,
    clean_markdown,
    count_headings,
    count_sections,
    drop_changelog_sections,
    heading_sections,
    iter_quickstart_docs,
    rst_to_markdown_headings,
)
from humpback.core.records import RecordError, read_rows, read_table
from humpback.stages.seed import (
    BUILTIN_SEED_PATH,
    detect_container,
    format_stats,
    heldout_path,
    import_seed,
    pair_id,
    seed_stats,
    split_heldout,
)

REPO = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


PAIRS = [
    {"id": "p1", "instruction": "Name a prime number.", "output": "7 is prime.", "category": "math"},
    {"id": "p2", "instruction": "Say hello in French.", "output": "Bonjour !", "category": "language"},
    {"id": "p3", "instruction": "What colour is the sky?", "output": "Usually blue.", "category": "science"},
]


# ------------------------------------------------------------------------------------------ plain import


def test_jsonl_to_parquet_keeps_ids_and_sets_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    write_jsonl(Path("data/seed.jsonl"), PAIRS)
    report = import_seed("data/seed.jsonl", "out/seed.parquet")
    rows = read_rows("out/seed.parquet", "seed")
    assert rows == [{"id": p["id"], "instruction": p["instruction"], "output": p["output"],
                     "source": "data/seed.jsonl"} for p in PAIRS]
    assert (report.read, report.candidates, report.written, report.dropped_total) == (3, 3, 3, 0)
    assert pq.read_schema("out/seed.parquet").names == ["id", "instruction", "output", "source"]


def test_jsonl_output_and_gzip_source(tmp_path):
    import gzip

    src = tmp_path / "seed.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for p in PAIRS:
            f.write(json.dumps(p) + "\n")
    out = tmp_path / "seed.jsonl"
    import_seed(src, out, source="mine")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"]
    assert set(rows[0]) == {"id", "instruction", "output", "source"} and rows[0]["source"] == "mine"


def test_parquet_folder_with_alias_keys_and_hash_ids(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    rows = [{"prompt": p["instruction"], "response": p["output"]} for p in PAIRS]
    pq.write_table(pa.Table.from_pylist(rows[:2]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), folder / "part-1.parquet")
    assert detect_container(folder) == "parquet"
    report = import_seed(folder, tmp_path / "seed.parquet")
    out = read_rows(tmp_path / "seed.parquet")
    assert [r["instruction"] for r in out] == [p["instruction"] for p in PAIRS]
    assert [r["id"] for r in out] == [pair_id(p["instruction"], p["output"]) for p in PAIRS]
    assert len({r["id"] for r in out}) == 3 and all(r["id"].startswith("seed-") for r in out)
    assert (report.instruction_key, report.output_key) == ("prompt", "response")
    assert any("instruction='prompt'" in n for n in report.notes)


def test_pair_id_is_stable_and_whitespace_insensitive_at_the_ends():
    assert pair_id("a", "b") == pair_id(" a\n", "b ") == "seed-" + __import__("hashlib").sha1(
        b"a\x00b").hexdigest()[:16]
    assert pair_id("a", "b") != pair_id("a", "c")


def test_hf_save_to_disk_dataset_and_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"question": p["instruction"], "answer": p["output"]}
                                             for p in PAIRS[:2]]),
        "test": datasets.Dataset.from_list([{"question": PAIRS[2]["instruction"], "answer": PAIRS[2]["output"]}]),
    })
    dd.save_to_disk(str(tmp_path / "hf"))
    assert detect_container(tmp_path / "hf") == "hf"
    report = import_seed(tmp_path / "hf", tmp_path / "train.parquet")
    assert [r["output"] for r in read_rows(tmp_path / "train.parquet")] == ["7 is prime.", "Bonjour !"]
    assert any("read 'train'" in n for n in report.notes)
    import_seed(tmp_path / "hf", tmp_path / "test.parquet", split="test")
    assert [r["output"] for r in read_rows(tmp_path / "test.parquet")] == ["Usually blue."]
    with pytest.raises(ConfigError, match="no split 'dev'"):
        import_seed(tmp_path / "hf", tmp_path / "x.parquet", split="dev")

    datasets.Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "single"))
    assert import_seed(tmp_path / "single", tmp_path / "single.parquet", format="hf").written == 3


def test_custom_keys_and_id_key(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", [{"key": f"k{i}", "q": p["instruction"], "a": p["output"],
                                               "instruction": "decoy"} for i, p in enumerate(PAIRS)])
    report = import_seed(src, tmp_path / "out.parquet", instruction_key="q", output_key="a", id_key="key")
    rows = read_rows(tmp_path / "out.parquet")
    assert [(r["id"], r["instruction"]) for r in rows] == [(f"k{i}", p["instruction"]) for i, p in enumerate(PAIRS)]
    assert report.notes == []


def test_alpaca_input_is_appended_to_the_instruction(tmp_path):
    src = tmp_path / "alpaca.json"  # a JSON array, as the Alpaca release ships it
    src.write_text(json.dumps([
        {"instruction": "Summarise the text.", "input": "Cats sleep a lot.", "output": "Cats sleep."},
        {"instruction": "Name a colour.", "input": "", "output": "Red."},
    ]))
    report = import_seed(src, tmp_path / "out.parquet")
    assert [r["instruction"] for r in read_rows(tmp_path / "out.parquet")] == [
        "Summarise the text.\n\nCats sleep a lot.", "Name a colour."]
    assert any("'input'" in n for n in report.notes)


def test_missing_explicit_key_names_key_and_file(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", PAIRS)
    with pytest.raises(RecordError) as e:
        import_seed(src, tmp_path / "out.parquet", instruction_key="question")
    assert "'question'" in str(e.value) and str(src) in str(e.value)


def test_key_missing_in_a_later_row_names_the_line(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", [PAIRS[0], PAIRS[1], {"instruction": "x", "answer": "y"}])
    with pytest.raises(RecordError, match=rf"{src}:3: key 'output' not found"):
        import_seed(src, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_no_known_key_names_the_expected_key_and_file(tmp_path):
    src = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a", "output": "b"}])
    with pytest.raises(RecordError) as e:
        import_seed(src, tmp_path / "out.parquet")
    assert "instruction" in str(e.value) and str(src) in str(e.value) and "--instruction-key" in str(e.value)


def test_bad_json_line_names_file_and_line(tmp_path):
    src = tmp_path / "seed.jsonl"
    src.write_text(json.dumps(PAIRS[0]) + "\n\n" + '{"instruction": "x", "output": \n')
    with pytest.raises(RecordError, match=rf"{src}:3: not valid JSON"):
        import_seed(src, tmp_path / "out.parquet")


def test_empty_and_duplicate_pairs_are_dropped_and_counted(tmp_path):
    rows = [
        {"instruction": "Name a prime number.", "output": "7"},
        {"instruction": "   ", "output": "orphan answer"},
        {"instruction": "Question without answer", "output": None},
        {"instruction": "name a  PRIME number.", "output": "7"},       # same pair after normalising
        {"instruction": "Name a prime number.\n", "output": "11"},      # same instruction, other output
        {"instruction": "Name an even number.", "output": "4"},
    ]
    src = write_jsonl(tmp_path / "seed.jsonl", rows)
    report = import_seed(src, tmp_path / "out.parquet")
    assert [r["output"] for r in read_rows(tmp_path / "out.parquet")] == ["7", "4"]
    assert report.read == 6 and report.written == 2
    assert dict(report.dropped) == {"empty": 2, "duplicate_pair": 1, "duplicate_instruction": 1}
    assert "dropped 4: duplicate_instruction 1, duplicate_pair 1, empty 2" in report.summary()


def test_same_id_for_different_pairs_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", [{**PAIRS[0], "id": "x"}, {**PAIRS[1], "id": "x"}])
    with pytest.raises(RecordError, match=rf"{src}:2: id 'x' already used at {src}:1"):
        import_seed(src, tmp_path / "out.parquet")


def test_reimport_keeps_existing_source_and_rejects_bad_output(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", PAIRS)
    import_seed(src, tmp_path / "a.parquet", source="origin")
    import_seed(tmp_path / "a.parquet", tmp_path / "b.parquet")
    assert {r["source"] for r in read_rows(tmp_path / "b.parquet")} == {"origin"}
    with pytest.raises(ConfigError, match="must end in .parquet or .jsonl"):
        import_seed(src, tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        import_seed(write_jsonl(tmp_path / "seed.txt", PAIRS), tmp_path / "x.parquet")


# ---------------------------------------------------------------------------------------------- oasst1


def _msg(mid, role, text, lang="en", rank=None, replies=(), **extra):
    m = {"message_id": mid, "role": role, "text": text, "lang": lang, "review_result": True,
         "deleted": False, "replies": list(replies), **extra}
    if rank is not None:
        m["rank"] = rank
    elif role == "assistant":
        m["rank"] = None
    return m


def _tree(tree_id, prompt, state="ready_for_export"):
    return {"message_tree_id": tree_id, "tree_state": state, "prompt": prompt}


OASST1_TREES = [
    # Kept: rank-0 reply, even though it is listed after the rank-1 one; the second turn is ignored.
    _tree("t1", _msg("p1", "prompter", "What is the capital of France?", replies=[
        _msg("a1b", "assistant", "I believe it's Paris, but check.", rank=1),
        _msg("a1", "assistant", "The capital of France is Paris.", rank=0, replies=[
            _msg("p1-2", "prompter", "And of Germany?", replies=[
                _msg("a1-2", "assistant", "Berlin.", rank=0)])]),
    ])),
    # Not English.
    _tree("t2", _msg("p2", "prompter", "Was ist die Hauptstadt von Spanien?", lang="de", replies=[
        _msg("a2", "assistant", "Madrid.", lang="de", rank=0)])),
    # The rank-0 reply was deleted; the remaining reply was never ranked.
    _tree("t3", _msg("p3", "prompter", "Tell me a joke about cats.", replies=[
        _msg("a3", "assistant", "Deleted joke.", rank=0, deleted=True),
        _msg("a3b", "assistant", "Why did the cat sit on the computer? To keep an eye on the mouse.")])),
    # The only reply has no rank field at all.
    _tree("t4", _msg("p4", "prompter", "List three primary colours.", replies=[
        {k: v for k, v in _msg("a4", "assistant", "Red, yellow and blue.").items() if k != "rank"}])),
    # Same first turn as t1 (after case/whitespace normalisation), another answer: a duplicate.
    _tree("t5", _msg("p5", "prompter", "what is the capital of  France?", replies=[
        _msg("a5", "assistant", "Paris.", rank=0)])),
    # Kept: the second selected pair.
    _tree("t6", _msg("p6", "prompter", "How do I boil an egg?\r\n", replies=[
        _msg("a6", "assistant", "Put it in boiling water for 7 to 9 minutes,\r\nthen cool it in cold water.",
             rank=0)])),
    # A tree still being grown is not part of the paper's release.
    _tree("t7", _msg("p7", "prompter", "Explain photosynthesis.", replies=[
        _msg("a7", "assistant", "Plants turn light into sugar.", rank=0)]), state="growing"),
    # The prompt failed review.
    _tree("t8", _msg("p8", "prompter", "Spam spam spam.", review_result=False, replies=[
        _msg("a8", "assistant", "Spam?", rank=0)])),
]

EXPECTED_OASST1 = [
    {"id": "p1", "instruction": "What is the capital of France?", "output": "The capital of France is Paris."},
    {"id": "p6", "instruction": "How do I boil an egg?",
     "output": "Put it in boiling water for 7 to 9 minutes,\nthen cool it in cold water."},
]
EXPECTED_OASST1_DROPS = {"non_target_lang": 1, "no_rank0_reply": 2, "duplicate_instruction": 1,
                         "tree_not_ready": 1, "review_failed": 1}


def _flatten(trees: list[dict]) -> list[dict]:
    flat = []

    def walk(message, parent, tree):
        flat.append({**{k: v for k, v in message.items() if k != "replies"}, "parent_id": parent,
                     "message_tree_id": tree["message_tree_id"], "tree_state": tree["tree_state"]})
        for r in message["replies"]:
            walk(r, message["message_id"], tree)

    for t in trees:
        walk(t["prompt"], None, t)
    return flat


def _pairs(path: Path) -> list[dict]:
    return [{k: r[k] for k in ("id", "instruction", "output")} for r in read_rows(path)]


def test_oasst1_trees_give_exactly_the_paper_selection(tmp_path):
    src = write_jsonl(tmp_path / "oasst1.trees.jsonl", OASST1_TREES)
    report = import_seed(src, tmp_path / "seed.parquet", format="oasst1")
    assert _pairs(tmp_path / "seed.parquet") == EXPECTED_OASST1
    assert {r["source"] for r in read_rows(tmp_path / "seed.parquet")} == {f"oasst1:{src.as_posix()}"}
    assert dict(report.dropped) == EXPECTED_OASST1_DROPS
    assert report.read == 20 and report.candidates == 8 and report.written == 2
    # p1-2 and a1-2 are the second turn; a1b, a3, a3b, a4 and the replies to a2, a7, a8 (prompts dropped
    # for other reasons) are first-turn replies that were not selected.
    assert dict(report.skipped) == {"not_first_turn": 2, "not_selected_reply": 7}


def test_oasst1_flat_messages_in_any_order_and_container(tmp_path):
    flat = _flatten(OASST1_TREES)
    random.Random(0).shuffle(flat)  # replies may come before their parents
    src = write_jsonl(tmp_path / "messages.jsonl", flat)
    report = import_seed(src, tmp_path / "seed.parquet")  # detected from message_id/parent_id
    assert report.format == "oasst1"
    assert sorted(_pairs(tmp_path / "seed.parquet"), key=lambda r: r["id"]) == EXPECTED_OASST1
    assert dict(report.dropped) == EXPECTED_OASST1_DROPS

    # The HF oasst1 release is flat messages in Parquet: every column present, rank a nullable float.
    for m in flat:
        m["rank"] = None if m.get("rank") is None else float(m["rank"])
        m.setdefault("review_result", None)
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "oasst1.parquet")
    import_seed(tmp_path / "oasst1.parquet", tmp_path / "seed2.parquet", format="oasst1")
    assert sorted(_pairs(tmp_path / "seed2.parquet"), key=lambda r: r["id"]) == EXPECTED_OASST1


def test_oasst1_other_language_and_any(tmp_path):
    src = write_jsonl(tmp_path / "oasst1.jsonl", OASST1_TREES)
    import_seed(src, tmp_path / "de.parquet", format="oasst1", lang="de")
    assert _pairs(tmp_path / "de.parquet") == [
        {"id": "p2", "instruction": "Was ist die Hauptstadt von Spanien?", "output": "Madrid."}]
    import_seed(src, tmp_path / "any.parquet", format="oasst1", lang="any")
    assert [r["id"] for r in _pairs(tmp_path / "any.parquet")] == ["p1", "p2", "p6"]


def test_oasst1_with_nothing_selected_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "oasst1.jsonl", OASST1_TREES[1:2])
    with pytest.raises(RecordError, match="no pairs left.*non_target_lang 1"):
        import_seed(src, tmp_path / "seed.parquet", format="oasst1")


# -------------------------------------------------------------------------------------------- held-out


def _many_pairs(n: int) -> list[dict]:
    return [{"id": f"q{i:03d}", "instruction": f"Question number {i}?", "output": f"Answer {i}."}
            for i in range(n)]


def test_heldout_split_is_deterministic_disjoint_and_order_independent(tmp_path):
    rows = _many_pairs(40)
    src = write_jsonl(tmp_path / "seed.jsonl", rows)
    out = tmp_path / "seed.parquet"
    report = import_seed(src, out, heldout_fraction=0.25, seed=3)
    held = tmp_path / "seed.heldout.parquet"
    assert heldout_path(out) == held and report.heldout_output == str(held)
    train_ids = [r["id"] for r in read_rows(out)]
    held_ids = [r["id"] for r in read_rows(held)]
    assert (report.written, report.heldout) == (30, 10) == (len(train_ids), len(held_ids))
    assert not set(train_ids) & set(held_ids) and set(train_ids) | set(held_ids) == {r["id"] for r in rows}
    assert train_ids == sorted(train_ids)  # source order is kept in both files

    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    src2 = write_jsonl(tmp_path / "shuffled.jsonl", shuffled)
    import_seed(src2, tmp_path / "again.jsonl", heldout_fraction=0.25, seed=3)
    again = [json.loads(line)["id"] for line in (tmp_path / "again.heldout.jsonl").read_text().splitlines()]
    assert set(again) == set(held_ids)

    other = split_heldout([r["id"] for r in rows], 0.25, seed=4)
    assert len(other) == 10 and other != set(held_ids)


def test_heldout_fraction_bounds():
    assert split_heldout(["a", "b", "c"], 0.0, 0) == set()
    assert len(split_heldout(["a", "b", "c"], 0.01, 0)) == 1  # a positive fraction holds out at least one
    with pytest.raises(ConfigError):
        split_heldout(["a", "b"], 0.9, 0)
    with pytest.raises(ConfigError):
        split_heldout(["a", "b"], 1.0, 0)


# ----------------------------------------------------------------------------------------------- stats


def test_seed_stats_and_markdown(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", [
        {"instruction": "one two", "output": "a b c d", "category": "x"},
        {"instruction": "one two three four", "output": "a", "category": "y"},
        {"instruction": "one", "output": "a b", "category": "x"},
    ])
    stats = seed_stats(src)
    assert stats["count"] == 3
    assert stats["categories"] == {
        "x": {"count": 2, "instruction_words_median": 1.5, "output_words_median": 3.0},
        "y": {"count": 1, "instruction_words_median": 4, "output_words_median": 1}}
    assert stats["instruction_words"] == {"min": 1, "median": 2, "mean": 2.3, "max": 4}
    assert stats["output_words"] == {"min": 1, "median": 2, "mean": 2.3, "max": 4}
    md = format_stats(stats, markdown=True)
    assert "| x | 2 | 66.7% | 1.5 | 3 |" in md and "| instruction | 1 | 2 | 2.3 | 4 |" in md
    assert "x" in format_stats(stats) and "66.7%" in format_stats(stats)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_seed_import_stats_and_errors(tmp_path):
    src = write_jsonl(tmp_path / "seed.jsonl", PAIRS + [{"instruction": "", "output": "x"}])
    runner = CliRunner()
    r = runner.invoke(main, ["seed", "import", str(src), "--output", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    assert "wrote 3 pairs" in r.output and "dropped 1: empty 1" in r.output
    r = runner.invoke(main, ["seed", "stats", str(src), "--markdown"])
    assert r.exit_code == 0 and "| category | pairs |" in r.output
    r = runner.invoke(main, ["seed", "import", str(src), "-o", str(tmp_path / "t.parquet"),
                             "--instruction-key", "nope"])
    assert r.exit_code == 2 and "error:" in r.output and "'nope'" in r.output and str(src) in r.output
    r = runner.invoke(main, ["seed", "import", str(src), "-o", str(tmp_path / "t.parquet"),
                             "--heldout-fraction", "1.5"])
    assert r.exit_code == 2 and "heldout fraction" in r.output


# ------------------------------------------------------------------------------------------ build_seed


def _build_seed_module():
    spec = importlib.util.spec_from_file_location("build_seed", REPO / "tools" / "build_seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_seed_merges_sorts_renumbers_and_writes_readme(tmp_path):
    build_seed = _build_seed_module()
    parts = tmp_path / "parts"
    parts.mkdir()
    write_jsonl(parts / "b.jsonl", [
        {"id": "b-2", "instruction": "Plan a trip.", "output": "Day one: ...", "category": "planning"},
        {"id": "b-1", "instruction": "Write a haiku.", "output": "Old pond ...", "category": "writing"},
    ])
    write_jsonl(parts / "a.jsonl", [
        {"id": "a-9", "instruction": "Plan a party.", "output": "Invite people.", "category": "planning"},
    ])
    out, readme = tmp_path / "seed.jsonl", tmp_path / "README.md"
    count, errors = build_seed.build(parts, out, readme)
    assert (count, errors) == (3, [])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["instruction"]) for r in rows] == [
        ("seed-0001", "Plan a party."), ("seed-0002", "Plan a trip."), ("seed-0003", "Write a haiku.")]
    text = readme.read_text()
    assert "CC-BY-4.0" in text and "written for the humpback project" in text
    assert "| planning | 2 | 66.7% |" in text and "| words per pair |" in text
    assert import_seed(out, tmp_path / "seed.parquet").written == 3


def test_build_seed_reports_every_problem_and_writes_nothing(tmp_path):
    build_seed = _build_seed_module()
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "a.jsonl").write_text(
        json.dumps({"id": "a-1", "instruction": "Same?", "output": "x", "category": "c"}) + "\n"
        + json.dumps({"id": "a-2", "instruction": "same? ", "output": "y", "category": "c"}) + "\n"
        + json.dumps({"id": "a-3", "instruction": "No category", "output": "z"}) + "\n"
        + "{broken\n")
    out = tmp_path / "seed.jsonl"
    _, errors = build_seed.build(parts, out, tmp_path / "README.md")
    joined = "\n".join(errors)
    assert f"{parts / 'a.jsonl'}:2: duplicate instruction (first at {parts / 'a.jsonl'}:1)" in joined
    assert f"{parts / 'a.jsonl'}:3: missing key(s) ['category']" in joined
    assert f"{parts / 'a.jsonl'}:4: not valid JSON" in joined
    assert not out.exists()


def test_shipped_seed_set_imports_cleanly(tmp_path):
    report = import_seed("builtin", tmp_path / "seed.parquet")
    assert report.written == report.read >= 250 and report.dropped_total == 0
    assert report.src == "builtin"
    assert set(read_table(tmp_path / "seed.parquet").column("source").to_pylist()) == {"builtin"}
    readme = (BUILTIN_SEED_PATH.parent / "README.md").read_text()
    assert f"Pairs: **{report.written}**" in readme and "CC-BY-4.0" in readme


# ------------------------------------------------------------------------------------ quickstart corpus


def test_clean_markdown_drops_badges_and_html_and_converts_setext():
    text = ("Fasteners\n=========\n\n[![CI](https://x/badge.svg)](https://x) ![v](https://y.svg)\n"
            "<p align=\"center\">\n<!-- a\ncomment -->\nCross-platform locks.\n\nUsage\n-----\n\n"
            "```python\n# not a heading\n<b>kept</b>\n```\n\n---\n\nEnd.\n")
    cleaned = clean_markdown(text)
    assert cleaned == ("# Fasteners\n\nCross-platform locks.\n\n## Usage\n\n"
                       "```python\n# not a heading\n<b>kept</b>\n```\n\n---\n\nEnd.\n")
    assert [h for h, _ in heading_sections(cleaned) if h] == ["Fasteners", "Usage"]


def test_rst_titles_become_atx_headings_by_first_appearance():
    text = ("=====\nTitle\n=====\n\n|ci| |docs|\n\n.. image:: https://x/logo.png\n   :alt: logo\n\n"
            "Intro text.\n\nInstall\n-------\n\nUse pip.\n\n.. code-block:: bash\n\n    pip install x\n\n"
            "Details\n~~~~~~~\n\nMore.\n\nUsage\n-------\n\nDone.\n")
    assert rst_to_markdown_headings(text) == (
        "# Title\n\nIntro text.\n\n## Install\n\nUse pip.\n\n    pip install x\n\n### Details\n\nMore.\n\n"
        "## Usage\n\nDone.\n")


def test_changelog_sections_are_dropped_with_their_subsections():
    text = ("# Lib\n\nIntro.\n\n## Usage\n\nUse it.\n\n## Changelog\n\n### v1.2.0 (2024-01-02)\n\n* fix\n\n"
            "## v1.1.0\n\n#### Fixes\n\n* more\n\n## License\n\nMIT.\n")
    assert drop_changelog_sections(text) == "# Lib\n\nIntro.\n\n## Usage\n\nUse it.\n\n## License\n\nMIT.\n"


def test_count_sections_ignores_code_comments():
    body = "word " * 150
    text = f"# A\n\n{body}\n\n```sh\n# comment, not a heading\n```\n\n## B\n\nshort\n"
    assert count_headings(text) == 2
    assert count_sections(text, 600, 3000) == 1


def test_quickstart_corpus_from_installed_distributions(tmp_path):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    report = build_quickstart_corpus(out1)
    build_quickstart_corpus(out2)
    assert out1.read_bytes() == out2.read_bytes()  # deterministic
    docs = [json.loads(line) for line in out1.read_text().splitlines()]
    assert report.written == len(docs) >= 40
    ids = [d["id"] for d in docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and "pypi:humpback" not in ids
    for d in docs:
        assert set(d) == {"id", "text", "url", "source", "license"}
        assert d["source"] == "importlib.metadata" and d["url"].startswith("http") and d["license"]
        assert count_headings(d["text"]) >= 3 and len(d["text"]) >= 1500
    # The quickstart needs >= 200 segments after filtering; leave headroom over that in raw sections.
    assert report.sections_in_range >= 250
    by_id = {d["id"]: d for d in docs}
    assert "pypi:pydantic" in by_id and "Changelog" not in by_id["pypi:pydantic"]["text"]
    md_only = list(iter_quickstart_docs(include_rst=False))
    assert len(md_only) < len(docs) and {d["id"] for d in md_only} < set(ids)


def test_quickstart_corpus_cli(tmp_path):
    r = CliRunner().invoke(main, ["quickstart-corpus", "--output", str(tmp_path / "q.jsonl"), "--markdown-only"])
    assert r.exit_code == 0, r.output
    assert "sections of 600-3000 chars under a heading:" in r.output
    assert sum(1 for _ in (tmp_path / "q.jsonl").open()) >= 40
