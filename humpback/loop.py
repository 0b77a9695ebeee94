"""`humpback run CONFIG`: the paper's loop from one YAML file, resumable at every stage.

prepare → seed → train backward → augment → train M0 → curate with M0 → train M1 on seed + tier
→ curate with M1 → train M2 … (``rounds`` rounds) → export. Each round fine-tunes from the base model and
scores the same candidate pairs again with the newest model, as in the paper.

RUN/ layout (every stage writes only its own folder; humpback.core.runs keeps RUN/manifest.json)::

    corpus/quickstart.jsonl     the offline corpus, when corpus.inputs is [quickstart]
    prepared/                   segments/, stats.json, quarantine/       (humpback prepare)
    seed.parquet                seed pairs; seed.heldout.parquet is the held-out split for evaluation
    models/backward, m0, m1 …   trained models (model card, loss curve, training_summary.json inside)
    augment/                    pairs/, rejected/, stats.json             (humpback augment)
    curate/r1, r2 …             scores/, curated/, stats.json, score_hist.png; rN is scored by m(N-1)
    eval/                       backward/ (eval-backward), eval-m0, eval-m1 … and forward-nll/ (humpback.guard)
    export/                     the result round's curated dataset + dataset card (humpback export)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from .stages.augment import AugmentConfig
from .core.config import ConfigError, StrictModel, apply_overrides, load_yaml, validate_config
from .stages.prepare.config import PrepareConfig
from .stages.curate import CurateConfig
from .core.locks import locked, run_lock_path
from .core.models import DEFAULT_MODEL
from .core.records import read_table
from .core.runs import Run, RunError, Stage, StageContext
from .core.slurm import RunExecutorConfig
from .stages.seed import seed_source_path
from .core.results import (AugmentSummary, CorpusSummary, CurateSummary, EvalBackwardSummary, ExportSummary,
                            PrepareSummary, RoundEvalSummary, SeedSummary, TrainSummary, describe, fig)
from .guard import SYSTEM, eval_stage, evaluate_round, format_round_table, standing
from .stages.train.config import TrainConfig

log = logging.getLogger(__name__)

QUICKSTART_CORPUS = "quickstart"


class CorpusSettings(StrictModel):
    # Files, folders or fsspec URLs for `humpback prepare`; the word `quickstart` builds the offline corpus of
    # the installed packages' READMEs into RUN/corpus/ instead.
    inputs: list[str] = Field(default_factory=lambda: [QUICKSTART_CORPUS], min_length=1)


class SeedSettings(StrictModel):
    # JSONL/Parquet/HF folder/oasst1 (see `humpback seed import`); the word `builtin` is the seed shipped with humpback
    path: str = "builtin"
    format: Optional[Literal["jsonl", "parquet", "hf", "oasst1"]] = None  # None: detected
    lang: Optional[str] = "en"  # oasst1 only
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # kept out of training, for `humpback eval heldout`
    split_seed: int = 0


class ExportSettings(StrictModel):
    enabled: bool = True
    min_score: Optional[float] = Field(None, ge=1, le=5)  # None: curate.min_score
    with_seed: bool = False  # also export the seed pairs (origin=seed), i.e. the whole training set of the last model
    license: str = "other"  # the card's license field; the corpus' licenses are the user's to state
    pretty_name: Optional[str] = None


class EvaluateSettings(StrictModel):
    # `eval backward` on the held-out seed split (and the `heldout` files) right after the backward model is
    # trained, with augment's prompt, filters, sampling and candidates: the run summary shows its figures.
    backward: bool = True
    backward_sample: int = Field(200, ge=-1)  # outputs per held-out set (-1: all)
    max_output_chars: int = Field(2000, ge=100)  # outputs are cut to this for PMI, as best-of-k selection does
    # held-out human (instruction, output) files nobody trained on (e.g. `humpback eval faq-pairs debian-faq`),
    # evaluated beside the seed's held-out split
    heldout: list[str] = Field(default_factory=list)
    # eval-m0, eval-m1, ...: each forward model's held-out NLL beside the previous one's and its tier's diversity,
    # what the collapse guard (loop.stop_on_regression) decides on
    forward: bool = True
    forward_sample: int = Field(200, ge=-1)  # held-out examples per set (-1: all); the CI narrows with more
    diversity_sample: int = Field(500, ge=-1)  # tier instructions measured (-1: all)


class LoopSettings(StrictModel):
    # M(N+1) worse than M(N) on a held-out set (NLL difference's 95% CI above 0, N >= 1): round N is the run's
    # result and the later rounds are not run; false: warn and go on (docs/run.md, the collapse guard)
    stop_on_regression: bool = True


class RunConfig(StrictModel):
    """One Humpback run. Every key is documented in docs/run.md; unknown keys are errors."""

    name: str = "humpback"
    run_dir: Optional[str] = None  # None: runs/<name>; --run-dir overrides
    base_model: str = DEFAULT_MODEL  # every model of the run is fine-tuned from this one
    rounds: int = Field(2, ge=1)  # curate → train rounds after M0 (paper: 2)
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    seed: SeedSettings = Field(default_factory=SeedSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)  # shared by every training
    train_backward: Optional[TrainConfig] = None  # keys set here override `train` for M_yx only
    train_forward: Optional[TrainConfig] = None  # ... and here for M0, M1, …
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    export: ExportSettings = Field(default_factory=ExportSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    executor: RunExecutorConfig = Field(default_factory=RunExecutorConfig)  # slurm: one job per stage

    @model_validator(mode="after")
    def _one_base(self) -> RunConfig:
        for key in ("train", "train_backward", "train_forward"):
            cfg = getattr(self, key)
            if cfg is not None and "base_model" in cfg.model_fields_set and cfg.base_model != self.base_model:
                raise ValueError(f"{key}.base_model: set the top-level base_model instead (every model of a run "
                                 "starts from it)")
        return self

    def training(self, which: Literal["backward", "forward"]) -> TrainConfig:
        data = self.train.model_dump(exclude_unset=True)
        extra = self.train_backward if which == "backward" else self.train_forward
        if extra is not None:
            for key, value in extra.model_dump(exclude_unset=True).items():
                if isinstance(value, dict) and isinstance(data.get(key), dict):
                    data[key] = {**data[key], **value}
                else:
                    data[key] = value
        data["base_model"] = self.base_model
        return validate_config(TrainConfig, data, source=f"train_{which}")

    def export_min_score(self) -> float:
        return self.export.min_score if self.export.min_score is not None else self.curate.min_score


def load_run_config(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> RunConfig:
    return validate_config(RunConfig, apply_overrides(load_yaml(path), overrides, str(path)), source=str(path))


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.prepared = root / "prepared"
        self.seed = root / "seed.parquet"
        self.heldout = root / "seed.heldout.parquet"
        self.models = root / "models"
        self.augment = root / "augment"
        self.export = root / "export"
        self.eval = root / "eval"

    def model(self, name: str) -> Path:
        return self.models / name

    def curate(self, r: int) -> Path:
        return self.root / "curate" / f"r{r}"


def _corpus_inputs(cfg: RunConfig, lay: Layout) -> list[str]:
    return [str(lay.corpus / "quickstart.jsonl") if i == QUICKSTART_CORPUS else i for i in cfg.corpus.inputs]


def _check_executors(cfg: RunConfig, source: str) -> None:
    # Slurm submissions return at once (datatrove chains job arrays by dependency), but the loop trains models
    # in this process between sharded stages, so it has to have each stage's output before going on.
    for key, kind in (("prepare.executor", cfg.prepare.executor), ("augment.executor.kind", cfg.augment.executor.kind),
                      ("curate.executor.kind", cfg.curate.executor.kind)):
        if kind == "slurm":
            raise ConfigError(f"{source}: {key}: slurm is not supported inside `humpback run`, which waits for each "
                              "stage before training the next model; set the run's `executor: {kind: slurm}` "
                              "instead (each stage is a job, its datatrove tasks run inside it), or run the loop "
                              "inside one allocation with executor local or ray (docs/scale_out.md)")


def _check_inputs(cfg: RunConfig, source: str) -> None:
    """Fail before hours of work when a named input is missing."""
    for i, item in enumerate(cfg.corpus.inputs):
        if item != QUICKSTART_CORPUS and "://" not in item and not Path(item).exists():
            raise ConfigError(f"{source}: corpus.inputs[{i}]: {item}: no such file or folder "
                              f"(relative paths are relative to the current directory, {Path.cwd()})")
    for i, item in enumerate(cfg.evaluate.heldout):
        if "://" not in item and not Path(item).exists():
            raise ConfigError(f"{source}: evaluate.heldout[{i}]: {item}: no such file or folder")
    from .core.models import resolve

    resolve(cfg.base_model)  # every model of the run is trained from it, here
    if "://" not in cfg.seed.path and not seed_source_path(cfg.seed.path).exists():
        raise ConfigError(f"{source}: seed.path: {cfg.seed.path}: no such file or folder (relative paths are relative "
                          f"to the current directory, {Path.cwd()}; `builtin` is the seed shipped with humpback)")


def run_loop(config_path: str | os.PathLike, run_dir: Optional[str] = None, start: Optional[str] = None,
             until: Optional[str] = None, overrides: Optional[dict[str, Any]] = None,
             only: Optional[str] = None, array_task: Optional[int] = None) -> Run:
    """Run (or resume) the loop described by ``config_path``; returns the Run with its manifest. With
    executor slurm it submits the stages as jobs and returns at once; ``only`` runs that one stage here (what
    each of those jobs does), beside the others, without the run's lock; with ``array_task`` only that task of
    its sharded step (what each task of the stage's job array does), leaving the stage to its own job."""
    cfg = load_run_config(config_path, overrides)
    _check_executors(cfg, str(config_path))
    _check_inputs(cfg, str(config_path))
    root = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    if array_task is not None and only is None:
        raise RunError("--array-task needs --only STAGE")
    if only is not None:
        stages = build_stages(cfg, Layout(root))
        order = [st.name for st in stages]
        if only not in order:
            raise RunError(f"--only {only}: unknown stage; stages are: {', '.join(order)}")
        run = Run(root, cfg.model_dump(mode="json"), kind="humpback", config_source=str(config_path), order=order)
        # the stages before it ran in other jobs: their stored results are what a walk would have handed on
        before = order[:order.index(only)]
        ctx = StageContext(run, results={name: run.stages[name].result for name in before
                                         if run.is_done(name)})
        st = next(st for st in stages if st.name == only)
        if st.skip is not None and st.skip(ctx):  # e.g. a round after the collapse guard stopped the run
            log.warning("[%s] not run: the run stopped early", only)
            run.stop(only)
        elif array_task is not None:
            run.array_task(st, ctx, array_task)
        else:
            run.stage(st, ctx)
        return run
    if cfg.executor.kind == "slurm":
        from .loop_slurm import submit_loop

        return submit_loop(cfg, root, str(config_path), start, until)
    # before the manifest is read or written: a second run on this folder must leave it untouched
    with locked(run_lock_path(root), "humpback run"):
        return _run_stages(cfg, root, str(config_path), start, until)


def _run_stages(cfg: RunConfig, root: Path, config_path: str, start: Optional[str], until: Optional[str]) -> Run:
    stages = build_stages(cfg, Layout(root))
    run = Run(root, cfg.model_dump(mode="json"), kind="humpback", config_source=str(config_path),
              order=[st.name for st in stages])
    run.select(start, until)
    log.warning("run %s: %d stages -> %s", cfg.name, len(stages), root)
    ctx = run.walk(stages)
    run.result = standing(ctx.results, cfg.rounds, cfg.loop.stop_on_regression).as_manifest()
    run.save()
    return run


def heldout_sets(cfg: RunConfig, lay: Layout) -> dict[str, str]:
    """The held-out sets the run evaluates on, by name: the seed's split when it has rows, then evaluate.heldout."""
    sets = {} if not lay.heldout.exists() or not len(read_table(lay.heldout)) else {"seed-heldout": str(lay.heldout)}
    return sets | {Path(h).stem: h for h in cfg.evaluate.heldout}


def build_stages(cfg: RunConfig, lay: Layout) -> list[Stage]:
    """The loop as a table: corpus (quickstart only), prepare, seed, backward, eval-backward (if enabled),
    augment, m0, eval-m0, then curate-rN / mN / eval-mN for each round (eval-mN if evaluate.forward; the rounds
    after a regression are skipped by the collapse guard), then export (if enabled); each names what it reads."""
    stages: list[Stage] = []
    corpus_stage: list[str] = []
    if QUICKSTART_CORPUS in cfg.corpus.inputs:
        def build_corpus(ctx: StageContext) -> CorpusSummary:
            from .stages.prepare.quickstart import build_quickstart_corpus

            report = build_quickstart_corpus(lay.corpus / "quickstart.jsonl")
            print(report.summary())
            return CorpusSummary(documents=report.written, chars=report.chars, output=report.output)

        stages.append(Stage("corpus", build_corpus, params={"kind": QUICKSTART_CORPUS}, outputs=[lay.corpus],
                            result=CorpusSummary))
        corpus_stage = ["corpus"]

    inputs = _corpus_inputs(cfg, lay)

    def prepare(ctx: StageContext) -> PrepareSummary:
        from .stages.prepare import run_prepare

        result = run_prepare(inputs, lay.prepared, config=cfg.prepare)
        print(result.summary())
        return PrepareSummary(segments=result.num_segments, documents_in=result.stats["documents"]["in"],
                              quarantined=result.stats["documents"]["quarantined_total"],
                              candidates=result.stats["segments"]["candidates"],
                              dropped=result.stats["segments"]["dropped"])

    stages.append(Stage("prepare", prepare, params=cfg.prepare.model_dump(mode="json"), inputs=inputs,
                        depends_on=corpus_stage, outputs=[lay.prepared], result=PrepareSummary))

    def seed(ctx: StageContext) -> SeedSummary:
        from .stages.seed import import_seed

        lay.heldout.unlink(missing_ok=True)
        report = import_seed(cfg.seed.path, lay.seed, format=cfg.seed.format, lang=cfg.seed.lang,
                             heldout_fraction=cfg.seed.heldout_fraction, seed=cfg.seed.split_seed)
        print(report.summary())
        return SeedSummary(read=report.read, written=report.written, heldout=report.heldout,
                           dropped=dict(report.dropped))

    stages.append(Stage("seed", seed, params=cfg.seed.model_dump(mode="json"),
                        inputs=[seed_source_path(cfg.seed.path)], outputs=[lay.seed, lay.heldout],
                        result=SeedSummary))

    backward_cfg = cfg.training("backward")

    def backward(ctx: StageContext) -> TrainSummary:
        from .stages.train import train_backward

        return TrainSummary.of(train_backward(str(lay.seed), lay.model("backward"), config=backward_cfg))

    stages.append(Stage("backward", backward, params=backward_cfg.model_dump(mode="json"), depends_on=["seed"],
                        outputs=[lay.model("backward")], result=TrainSummary))

    if cfg.evaluate.backward:
        def eval_backward(ctx: StageContext) -> EvalBackwardSummary:
            from .evaluate.backward import BackwardEvalConfig, evaluate_backward, format_backward_table
            from .evaluate.common import EvalConfig

            results = {}
            for name, path in heldout_sets(cfg, lay).items():
                summary = evaluate_backward(
                    path, str(lay.model("backward")), lay.eval / "backward" / name,
                    config=EvalConfig(engine=cfg.augment.engine.model_copy(update={"progress": False})),
                    augment=cfg.augment, settings=BackwardEvalConfig(sample=cfg.evaluate.backward_sample,
                                                                     max_output_chars=cfg.evaluate.max_output_chars),
                    scorer_engine=(cfg.augment.selection.engine or cfg.augment.engine).model_copy(
                        update={"progress": False}))
                print(format_backward_table(summary))
                results[name] = {m: summary[m] for m in ("acceptance", "relevance_auroc", "relevance_auroc_human",
                                                         "recovery", "similarity")} | {
                    "n": summary["n"], "k": summary["k"], "output": str(lay.eval / "backward" / name)}
            return EvalBackwardSummary(sets=results)

        stages.append(Stage("eval-backward", eval_backward, params=cfg.augment.model_dump(mode="json") | {
            "evaluate": cfg.evaluate.model_dump(mode="json")}, inputs=cfg.evaluate.heldout,
            depends_on=["seed", "backward"], outputs=[lay.eval / "backward"], result=EvalBackwardSummary))

    def augment(ctx: StageContext) -> AugmentSummary:
        from .stages.augment import run_augment

        stats = run_augment(str(lay.prepared), str(lay.model("backward")), str(lay.augment), cfg.augment)
        print(f"pairs written {stats['pairs_written']} of {stats['pairs_generated']} generated; "
              f"dropped {stats['dropped']}")
        return AugmentSummary(**{k: stats[k] for k in ("segments_in", "pairs_generated", "pairs_written",
                                                       "dropped")})

    stages.append(Stage("augment", augment, params=cfg.augment.model_dump(mode="json"),
                        depends_on=["prepare", "backward"], outputs=[lay.augment], result=AugmentSummary,
                        tasks=cfg.augment.executor.tasks, workers=cfg.augment.executor.workers))

    # M0, then curate -> train rounds: round r is scored by m(r-1), and m(r) trains on seed + its tier
    forward_cfg = cfg.training("forward")

    def forward(name: str, augmented: list[str]):
        def _train(ctx: StageContext) -> TrainSummary:
            from .stages.train import train_forward

            return TrainSummary.of(train_forward(str(lay.seed), lay.model(name), augmented=augmented,
                                                 config=forward_cfg))
        return _train

    def curate(scorer_model: Path, out: Path):
        def _curate(ctx: StageContext) -> CurateSummary:
            from .stages.curate import format_summary, run_curate

            stats = run_curate(str(lay.augment), str(scorer_model), str(out), cfg.curate)
            print(format_summary(stats))
            return CurateSummary.of(stats)
        return _curate

    def evaluate(r: int):
        def _evaluate(ctx: StageContext) -> RoundEvalSummary:
            models = [str(lay.model(f"m{k}")) for k in (r - 1, r) if k >= 0]
            result = RoundEvalSummary(**evaluate_round(
                r, models, heldout_sets(cfg, lay), lay.curate(r) / "curated" if r else None, lay.eval / eval_stage(r),
                engine=cfg.curate.engine, sample=cfg.evaluate.forward_sample,
                diversity_sample=cfg.evaluate.diversity_sample, work=lay.eval / "forward-nll"))
            print(result.summary())
            return result
        return _evaluate

    def stopped(ctx: StageContext) -> bool:
        """After M(N+1) regressed with loop.stop_on_regression: the later rounds are not walked."""
        st = standing(ctx.results, cfg.rounds, cfg.loop.stop_on_regression)
        if st.stopped_after and not ctx.state.get("guard_logged"):
            log.warning("collapse guard: stopping after %s; the run's result is round %d (models/m%d). %s "
                        "(loop.stop_on_regression: false goes on)", st.stopped_after, st.round, st.round, st.reason)
            ctx.state["guard_logged"] = True
        return st.stopped_after is not None

    def add_eval(r: int) -> None:
        if cfg.evaluate.forward:
            stages.append(Stage(
                eval_stage(r), evaluate(r), params={
                    "heldout": cfg.evaluate.heldout, "sample": cfg.evaluate.forward_sample,
                    "diversity_sample": cfg.evaluate.diversity_sample, "system": SYSTEM,
                    "engine": cfg.curate.engine.model_dump(mode="json")},
                inputs=cfg.evaluate.heldout, depends_on=["seed", *(f"m{k}" for k in (r - 1, r) if k >= 0)]
                + ([f"curate-r{r}"] if r else []), outputs=[lay.eval / eval_stage(r)], result=RoundEvalSummary,
                skip=stopped))

    stages.append(Stage("m0", forward("m0", []), params=forward_cfg.model_dump(mode="json"), depends_on=["seed"],
                        outputs=[lay.model("m0")], result=TrainSummary))
    add_eval(0)
    for r in range(1, cfg.rounds + 1):
        out = lay.curate(r)
        stages.append(Stage(f"curate-r{r}", curate(lay.model(f"m{r - 1}"), out),
                            params=cfg.curate.model_dump(mode="json"), depends_on=["augment", f"m{r - 1}"],
                            outputs=[out], result=CurateSummary, skip=stopped, tasks=cfg.curate.executor.tasks,
                            workers=cfg.curate.executor.workers))
        stages.append(Stage(f"m{r}", forward(f"m{r}", [str(out / "curated")]),
                            params=forward_cfg.model_dump(mode="json"), depends_on=["seed", f"curate-r{r}"],
                            outputs=[lay.model(f"m{r}")], result=TrainSummary, skip=stopped))
        add_eval(r)

    if cfg.export.enabled:
        def result_round(ctx: StageContext) -> int:
            return standing(ctx.results, cfg.rounds, cfg.loop.stop_on_regression).round or cfg.rounds

        def export(ctx: StageContext) -> ExportSummary:
            from .stages.export import export_dataset

            # the card reads the run's result from the manifest
            ctx.run.result = standing(ctx.results, cfg.rounds, cfg.loop.stop_on_regression).as_manifest()
            ctx.run.save()
            result = export_dataset(lay.root, lay.export, min_score=cfg.export_min_score(),
                                    with_seed=cfg.export.with_seed, license=cfg.export.license,
                                    pretty_name=cfg.export.pretty_name or f"humpback {cfg.name}",
                                    round=result_round(ctx))
            print(result.summary())
            return ExportSummary(**result.as_dict())

        def export_after(ctx: StageContext) -> list[str]:
            # the result round's tier and model, and every eval the card shows
            r = result_round(ctx)
            return [f"curate-r{r}", f"m{r}", *(n for n in ctx.results if n.startswith("eval-m"))]

        stages.append(Stage("export", export, params=lambda ctx: cfg.export.model_dump(mode="json") | {
            "min": cfg.export_min_score(), "round": result_round(ctx)}, depends_on=export_after,
            outputs=[lay.export], result=ExportSummary))
    return stages


def run_status(config_path: str | os.PathLike, run_dir: Optional[str] = None,
               overrides: Optional[dict[str, Any]] = None) -> str:
    """The `--status` table of the run ``config_path`` describes (any executor); reads, never writes."""
    from .loop_status import format_status

    cfg = load_run_config(config_path, overrides)
    root = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    return format_status(root, [st.name for st in build_stages(cfg, Layout(root))])


def format_run_summary(run: Run) -> str:
    """Counts per stage, tier sizes, self-checks and time per stage, from the manifest."""
    lines = [f"run {run.dir} ({run.config.get('name')}, {run.config.get('rounds')} round(s), "
             f"base {run.config.get('base_model')})", ""]
    lines.append(f"{'stage':<12} {'status':<8} {'seconds':>8}  result")
    total = 0.0
    for row in run.summary_rows():
        rec = run.stages.get(row["stage"])
        secs = row["seconds"]
        total += secs or 0
        lines.append(f"{row['stage']:<12} {row['status']:<8} {secs if secs is not None else '-':>8}  "
                     f"{describe(row['stage'], rec.result if rec else {})}")
    lines.append(f"{'total':<12} {'':<8} {round(total, 1):>8}")
    warnings = [(name, rec.result.get("warning")) for name, rec in run.stages.items()
                if rec.result.get("warning")]
    for name, w in warnings:
        lines.append(f"WARNING {name}: {w}")
    lines += _backward_figures(run)
    walked = {n: rec.result for n, rec in run.stages.items() if n not in run.stopped}
    lines += format_round_table(walked, run.result) + _examples(run)
    lines += ["", *format_outputs(run)]
    return "\n".join(lines)


def _backward_figures(run: Run) -> list[str]:
    rec = run.stages.get("eval-backward")
    sets = (rec.result or {}).get("sets") if rec else None
    if not sets:
        return []
    lines = ["", "backward model on held-out human pairs (humpback eval backward; 95% intervals):",
             f"  {'set':<16}{'n':>4}{'k':>3}  {'acceptance':<19}{'relevance AUROC':<19}{'(human)':<19}"
             f"{'recovery':<19}{'similarity':<19}"]
    for name, r in sets.items():
        lines.append(f"  {name:<16}{r['n']:>4}{r['k']:>3}  {fig(r['acceptance']):<19}{fig(r['relevance_auroc']):<19}"
                     f"{fig(r['relevance_auroc_human']):<19}{fig(r['recovery']):<19}{fig(r['similarity']):<19}")
    return lines


def _examples(run: Run, n: int = 5) -> list[str]:
    """A few generated instructions beside the start of their segment, so the quality shows at once."""
    lay = Layout(run.dir)
    if not run.is_done("augment") or not (lay.augment / "pairs").is_dir():
        return []
    from .core.records import parquet_files

    rows = []
    for f in parquet_files(lay.augment / "pairs"):
        rows += read_table(f).select(["pair_id", "instruction", "output"]).to_pylist()
    rows.sort(key=lambda r: r["pair_id"])  # a stable, arbitrary sample
    lines = ["", f"generated instructions (first {min(n, len(rows))} of {len(rows)} kept pairs, by pair id):"]
    for r in rows[:n]:
        seg = " ".join(r["output"].split())[:110]
        lines += [f"  Q: {' '.join(r['instruction'].split())[:200]}", f"     segment: {seg}…"]
    return lines


def format_outputs(run: Run) -> list[str]:
    """Where the run's products are, and what to run next."""
    lay = Layout(run.dir)
    rounds = run.config.get("rounds", 1)
    done = [n for n in run.order if run.is_done(n)]
    models = [m for m in ["backward", *(f"m{r}" for r in range(rounds + 1))] if m in done]
    last_curate = max((int(n.split("-r")[1]) for n in done if n.startswith("curate-r")), default=None)
    if (run.result or {}).get("round") and f"curate-r{run.result['round']}" in done:
        last_curate = run.result["round"]  # the run's result (the collapse guard may have stopped it earlier)
    out = ["outputs:"]
    if "seed" in done:
        out.append(f"  seed pairs       {lay.seed}  (held out: {lay.heldout})")
    if "augment" in done:
        out.append(f"  candidate pairs  {lay.augment / 'pairs'}  (dropped, with reasons: {lay.augment / 'rejected'})")
    if last_curate:
        out.append(f"  curated tier     {lay.curate(last_curate) / 'curated'}  (scores, stats.json, score_hist.png "
                   "beside it)")
    if models:
        out.append(f"  models           {', '.join(str(lay.model(m)) for m in models)}  (model card README.md in "
                   "each)")
    if "export" in done:
        out.append(f"  dataset + card   {lay.export}  (README.md is the dataset card)")
    if (run.dir / "report.html").is_file():
        out.append(f"  report           {run.dir / 'report.html'}  (one self-contained page: stages, scores, "
                   "self-checks, every pair; open it in a browser)")
    if run.logs_dir.is_dir():
        out.append(f"  stage logs       {run.logs_dir}/<stage>.log  (everything each stage printed; -v shows it live)")
    out += ["next:",
            f"  humpback stats {run.dir}                      # counts, lengths, scores, verbs, duplicates",
            f"  humpback export {run.dir} --to-hub USER/NAME  # publish the curated dataset with its card",
            f"  humpback report {run.dir}                     # rewrite report.html (e.g. after more stages)"]
    if len(models) > 1:
        heldout = lay.heldout if lay.heldout.exists() else "HELDOUT.jsonl"
        names = ",".join(str(lay.model(m)) for m in models if m != "backward")
        out.append(f"  humpback eval heldout --models {names} --data {heldout}")
    return out


__all__ = ["RunConfig", "load_run_config", "run_loop", "run_status", "format_run_summary", "build_stages", "Layout"]
