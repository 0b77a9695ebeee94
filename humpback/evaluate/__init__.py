"""Evaluation (``humpback eval``): scorer quality, held-out NLL, pairwise judging, diversity, decontamination.

One module per command; see docs/eval.md. Names are imported on first use, so ``humpback --help`` does not pay
for datatrove, numpy and the model stack.
"""

from importlib import import_module

_EXPORTS = {
    "EvalConfig": "common", "DecontamConfig": "decontam", "decontaminate": "decontam",
    "evaluate_diversity": "diversity", "verb_noun": "diversity", "evaluate_heldout": "heldout",
    "JudgeConfig": "judge", "evaluate_judge": "judge", "ScorerSpec": "scorer", "evaluate_scorers": "scorer",
    "parse_scorer_specs": "scorer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
