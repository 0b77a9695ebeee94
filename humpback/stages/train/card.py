"""The model card (README.md) and loss curve written next to every trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

TASKS = {
    "backward": "Backward model M_yx: given a response (humpback's backward_train.jinja prompt), writes the "
                "instruction it answers. Used by `humpback augment` to label unlabelled text.",
    "forward": "Forward model: answers instructions. Seed pairs were tagged with the system prompt S_a, augmented "
               "pairs with S_w; at inference the paper's best setting is both tags (`forward_messages(..., "
               "tag='both')`).",
}


def plot_loss_curve(log_history: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    # Figure + Agg canvas directly: no pyplot, so no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, marker="o" if len(points) < 40 else None, markersize=3, linewidth=1.2)
    else:
        ax.text(0.5, 0.5, "no loss was logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def _breakdown(src: dict[str, Any]) -> str:
    parts = src.get("by_source") or {}
    if src["origin"] == "augmented":
        parts = {f"score {k}" if k != "unscored" else k: v for k, v in (src.get("by_score") or {}).items()}
    return ", ".join(f"{k}: {v}" for k, v in parts.items()) or "-"


def render_model_card(summary: dict[str, Any]) -> str:
    kind = summary["kind"]
    hp = summary["hyperparameters"]
    res = summary["results"]
    data = summary["data"]
    lines = [
        "---",
        f"base_model: {summary['base_model']}",
        f"library_name: {'peft' if summary['saved_as'] == 'adapter' else 'transformers'}",
        "tags:",
        "- humpback",
        "- instruction-backtranslation",
        "- trl",
        "- sft",
        f"- {kind}",
        "---",
        "",
        f"# humpback {kind} model",
        "",
        TASKS[kind],
        "",
        "## Base model",
        "",
        f"- reference: `{summary['base_model']}` (resolved to `{summary['base_path']}`)",
        f"- fine-tuning: {'LoRA' if hp['lora'] else 'full'}; saved as **{summary['saved_as']}**",
        "",
        "## Training data",
        "",
        "| origin | file | read | empty | below min score | too long | used | breakdown |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for src in data["sources"]:
        lines.append(
            f"| {src['origin']} | `{Path(src['path']).name}` | {src['read']} | {src['empty']} | "
            f"{src['below_min_score']} | {src['too_long']} | {src['kept'] - src['too_long']} | {_breakdown(src)} |"
        )
    totals = ", ".join(f"{origin}: {n}" for origin, n in data["examples_by_origin"].items())
    lines += [
        "",
        f"Examples used: **{data['examples']}** ({totals}). The exact training set is in `train_data.parquet`.",
    ]
    if kind == "forward":
        if hp["tags"]:
            lines.append(f"System tags: seed → \"{hp['seed_tag']}\", augmented → \"{hp['web_tag']}\".")
        else:
            lines.append("System tags: none (the no-tags ablation).")
        if hp.get("min_score") is not None:
            lines.append(f"Augmented tier: score >= {hp['min_score']}.")
    lines += [
        "",
        "## Hyperparameters",
        "",
        "| key | value |",
        "| --- | --- |",
    ]
    for key in ("learning_rate", "final_learning_rate", "lr_schedule", "weight_decay", "dropout", "batch_size",
                "micro_batch_size", "gradient_accumulation", "max_steps", "epochs", "max_length", "batching",
                "precision", "max_grad_norm", "warmup_ratio", "seed"):
        lines.append(f"| {key} | {_fmt(hp.get(key))} |")
    if hp["lora"]:
        for key, value in hp["lora"].items():
            lines.append(f"| lora.{key} | {_fmt(value)} |")
    lines += [
        "",
        "## Results",
        "",
        (f"- final loss (last logged step): **{_fmt(res['final_loss'])}**; first logged loss: "
         f"{_fmt(res['first_loss'])}; mean over the run: {_fmt(res['train_loss'])}"),
        f"- steps: {res['global_step']} of {hp['max_steps']} ({_fmt(res['epochs_done'])} epochs)",
        (f"- wall time in the last process: {_fmt(res['runtime_s'])} s; mean step time "
         f"{_fmt(res['mean_step_s'])} s; {_fmt(res['tokens_per_s'])} training tokens/s on {res['device']}"),
    ]
    if res.get("resumed_from_step"):
        lines.append(f"- resumed from the checkpoint at step {res['resumed_from_step']}")
    lines += [
        "",
        "![training loss](loss_curve.png)",
        "",
        "## Use",
        "",
        "Any humpback stage that takes a model accepts this folder. By hand:",
        "",
    ]
    if kind == "backward":
        command = f"humpback generate --model {summary['output_name']} --template backward_train \"<a response>\""
        lines += ["```", command, "```"]
    else:
        lines += [
            "```python",
            "from humpback.engines import GenerationRequest, make_engine",
            "from humpback.stages.train import forward_messages",
            "",
            f"engine = make_engine({summary['output_name']!r})",
            'messages = forward_messages("<an instruction>", tag="both")  # S_a + S_w, the paper\'s best',
            "[result] = engine.generate([GenerationRequest(messages=messages)])",
            "```",
        ]
    lines += [
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}.",
        "",
    ]
    return "\n".join(lines)
