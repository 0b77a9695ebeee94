"""The collapse guard of `humpback run` (humpback.guard): eval-m{r} after each forward model, the stop when
M(N+1) is worse than M(N) on held-out human outputs, and the per-round table in the summary, manifest and card.

The regression is real: the fault point ``train.saved:m2=perturb`` adds noise to M2's saved weights, and the
held-out NLL measures the damage. The forward models train with a learning rate too small to move a float32
weight, so every other model is the base model and no difference between them can be a chance "regression".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from humpback.core import faults
from humpback.core.faults import ENV as FAULT_ENV
from humpback.guard import Standing, standing
from humpback.loop import format_run_summary, run_loop
from runconfig import REPO, rows, tiny_run_config

FAQ = REPO / "tests" / "fixtures" / "python_faq_heldout30.jsonl"
STOPPED = ["curate-r3", "m3", "eval-m3"]


def _config(tmp: Path, tiny_model_dir: str, **changes) -> Path:
    return tiny_run_config(tmp, tiny_model_dir, **{
        "evaluate.backward": False, "evaluate.heldout": [str(FAQ)], "evaluate.forward_sample": 8,
        "evaluate.diversity_sample": 50, "train_forward.learning_rate": 1e-12, **changes})


def _guard_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("collapse guard:")]


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _exported_rounds(root: Path) -> set:
    return {r["round"] for r in rows(root / "export" / "data", ["round"])}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_model_dir):
    """Three rounds, M2 damaged after training, loop.stop_on_regression at its default (true)."""
    tmp = tmp_path_factory.mktemp("guard")
    cfg = _config(tmp, tiny_model_dir, rounds=3, **{"curate.min_score": 1})
    mp = pytest.MonkeyPatch()
    mp.setenv(FAULT_ENV, "train.saved:m2=perturb")
    faults._hits.clear()  # fault points count hits per process
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    try:
        run = run_loop(cfg, run_dir=str(tmp / "run"))
    finally:
        logging.getLogger().removeHandler(handler)
        mp.undo()
    return tmp, cfg, run, handler.messages


class _Collect(logging.Handler):
    """The warnings of a module-scoped run (caplog is per test)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_regression_warns_stops_and_makes_the_previous_round_the_result(stopped_run):
    tmp, _, run, messages = stopped_run
    root = tmp / "run"
    warned = [m for m in messages if m.startswith("collapse guard: m2 is worse than m1")]
    assert len(warned) == 1, messages
    # the line names each set with both models' NLL and the difference, each with its interval
    for name in ("seed-heldout", "python_faq_heldout30"):
        assert f"{name} NLL " in warned[0]
    assert warned[0].count("[") == 6 and "difference" in warned[0]
    assert any(m.startswith("collapse guard: stopping after eval-m2; the run's result is round 1") for m in messages)

    status = {r["stage"]: r["status"] for r in run.summary_rows()}
    assert [status[s] for s in STOPPED] == ["stopped"] * 3 and status["export"] == "done"
    assert "failed" not in status.values() and "pending" not in status.values()

    manifest = _manifest(root)
    assert manifest["result"] == {"round": 1, "model": "m1", "tier": "curate/r1/curated", "stopped_after": "eval-m2",
                                  "reason": manifest["stages"]["eval-m2"]["result"]["warning"]}
    assert manifest["stopped"] == STOPPED and not set(STOPPED) & set(manifest["stages"])
    assert not (root / "models" / "m3").exists() and not (root / "curate" / "r3").exists()
    m2 = manifest["stages"]["eval-m2"]["result"]
    assert m2["previous"] == "m1" and sorted(m2["worse_on"]) == ["python_faq_heldout30", "seed-heldout"]
    assert all(f["diff_ci"][0] > 0 and f["nll"] > f["previous_nll"] for f in m2["sets"].values())
    assert not manifest["stages"]["eval-m1"]["result"]["worse_on"]  # M1 is M0's weights: a difference of 0

    # export wrote round 1's tier, not round 2's
    marker = json.loads((root / "export" / "humpback_export.json").read_text())
    assert marker["round"] == 1 and marker["curate_dir"] == str(root / "curate" / "r1")
    assert _exported_rounds(root) == {1}
    tier1 = {r["pair_id"] for r in rows(root / "curate" / "r1" / "curated", ["pair_id"])}
    assert {r["pair_id"] for r in rows(root / "export" / "data", ["pair_id"])} == tier1


def test_the_per_round_table_in_summary_and_card(stopped_run):
    tmp, _, run, _ = stopped_run
    text = format_run_summary(run)
    table = text[text.index("forward models on held-out human outputs"):].splitlines()
    assert "seed-heldout NLL" in table[1] and "python_faq_heldout30 Δ previous" in table[1]
    assert "tier pairs" in table[1] and "distinct-2" in table[1] and "embedding spread" in table[1]
    r0, r1, r2 = (line.split() for line in table[2:5])
    assert r0[:2] == ["0", "m0"] and r1[:2] == ["1", "m1"] and r2[:2] == ["2", "m2"]
    assert r1[-1] == "result" and r2[-2:] == ["stopped", "here"] and r2.count("worse") == 2
    assert "stopped after eval-m2: the run's result is round 1 (models/m1, curate/r1/curated)" in text
    assert "WARNING eval-m2: m2 is worse than m1" in text

    card = (tmp / "run" / "export" / "README.md").read_text()
    section = card[card.index("### Forward models on held-out human outputs"):]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert "seed-heldout NLL" in lines[0] and "result" in lines[0]
    assert lines[2].startswith("| 1 | m1 |") and lines[2].endswith("| result |")
    assert lines[3].startswith("| 2 | m2 |") and lines[3].endswith("| stopped here |")
    assert "The run stopped early (loop.stop_on_regression): m2 is worse than m1" in section

    from humpback.analysis.report import write_report

    page = write_report(tmp / "run").read_text(encoding="utf-8")
    assert "Forward models on held-out human outputs" in page and "stopped here" in page
    assert page.count('<span class="st-stopped">stopped</span>') == 3 and "This run is not finished" not in page


def test_rerunning_a_stopped_run_keeps_it_stopped(stopped_run):
    tmp, cfg, _, _ = stopped_run
    again = run_loop(cfg, run_dir=str(tmp / "run"))
    assert set(again.timings.values()) == {0.0}
    assert again.stopped == STOPPED and again.result["round"] == 1
    assert not (tmp / "run" / "models" / "m3").exists()


def test_without_stop_on_regression_it_warns_and_goes_on(stopped_run, tiny_model_dir, tmp_path):
    tmp, _, _, _ = stopped_run
    root = tmp_path / "run"
    shutil.copytree(tmp / "run", root)
    cfg = _config(tmp, tiny_model_dir, rounds=3, **{"curate.min_score": 1, "loop.stop_on_regression": False})
    run = run_loop(cfg, run_dir=str(root))
    assert {k for k, v in run.timings.items() if v > 0} == {*STOPPED, "export"}  # nothing before re-made
    assert {r["status"] for r in run.summary_rows()} == {"done"}
    manifest = _manifest(root)
    assert manifest["result"]["round"] == 3 and manifest["result"]["stopped_after"] is None
    assert manifest["stopped"] == []
    assert _exported_rounds(root) == {3}
    text = format_run_summary(run)
    assert "WARNING eval-m2: m2 is worse than m1" in text
    assert "the run's result: round 3 (models/m3, curate/r3/curated)" in text


def test_a_run_without_regression_has_no_warning_and_ends_at_its_last_round(tiny_model_dir, tmp_path, caplog):
    cfg = _config(tmp_path, tiny_model_dir, rounds=2, **{"curate.min_score": 1})
    with caplog.at_level(logging.WARNING):
        run = run_loop(cfg, run_dir=str(tmp_path / "run"))
    assert _guard_warnings(caplog) == []
    manifest = _manifest(tmp_path / "run")
    evals = [manifest["stages"][f"eval-m{r}"]["result"] for r in range(3)]
    assert [e["warning"] for e in evals] == [None] * 3 and all(e["sets"] for e in evals)
    assert evals[0]["tier"] is None and evals[1]["tier"]["size"] > 0 and evals[2]["previous"] == "m1"
    assert manifest["result"] == {"round": 2, "model": "m2", "tier": "curate/r2/curated", "stopped_after": None,
                                  "reason": None}
    assert {r["status"] for r in run.summary_rows()} == {"done"}
    assert _exported_rounds(tmp_path / "run") == {2}
    text = format_run_summary(run)
    assert "WARNING eval-m" not in text and "the run's result: round 2" in text  # (curate's self-check may warn)


def _eval(worse: bool) -> dict:
    return {"worse_on": ["seed-heldout"] if worse else [], "warning": "worse" if worse else None}


def test_the_decision_compares_rounds_from_one_on():
    trained = {f"m{r}": {} for r in range(4)}
    # M1 worse than M0: reported by eval-m1, but M0 has no tier to fall back to
    assert standing(trained | {"eval-m1": _eval(True)}, 3, True) == Standing(3)
    assert standing(trained | {"eval-m2": _eval(True)}, 3, True) == Standing(1, "eval-m2", "worse")
    assert standing(trained | {"eval-m3": _eval(True)}, 3, True) == Standing(2, "eval-m3", "worse")
    assert standing(trained | {"eval-m2": _eval(True)}, 3, False) == Standing(3)
    assert standing({"m0": {}, "m1": {}}, 3, True) == Standing(1)  # a walk cut short by --until
    assert standing({"m0": {}}, 3, True).round is None


def test_on_slurm_the_rounds_after_the_stop_get_no_job_and_a_queued_one_does_nothing(stopped_run, tmp_path):
    import yaml

    from humpback.loop import run_status

    tmp, cfg, _, _ = stopped_run
    root = tmp_path / "run"
    shutil.copytree(tmp / "run", root)
    manifest = _manifest(root)
    manifest["stopped"] = []  # as a chain submitted before eval-m2 ended leaves it: curate-r3's job is queued
    (root / "manifest.json").write_text(json.dumps(manifest))
    run_loop(cfg, run_dir=str(root), only="curate-r3")  # what that job runs once eval-m2 has stopped the run
    assert _manifest(root)["stopped"] == ["curate-r3"] and not (root / "curate" / "r3").exists()
    status = run_status(cfg, run_dir=str(root))
    assert any(line.split()[:2] == ["curate-r3", "stopped"] for line in status.splitlines()), status

    slurm_cfg = tmp_path / "slurm.yaml"
    slurm_cfg.write_text(yaml.safe_dump(yaml.safe_load(cfg.read_text()) | {
        "executor": {"kind": "slurm", "slurm": {"dry_run": True}}}))
    run_loop(slurm_cfg, run_dir=str(root))  # a chain submitted now: the guard's verdict is known
    assert not list((root / "slurm").glob("*.args"))  # every stage is done or stopped: no job
    assert _manifest(root)["stopped"] == STOPPED
