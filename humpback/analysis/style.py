"""A cheap classifier of *voice*: does a text read like an assistant's answer, or like a web page?

The paper's rubric gives an assistant-style answer 5 and a page "written from another person's point of view"
(a blog post, a manual page, a forum thread) 3. A relevance score (PMI) cannot see that difference, so the
``humpback`` scorer adds this classifier's log-odds. It is a fastText model (bag of words and word bigrams, plus
markers of layout: line breaks, list items, headings, code fences, links), trained in about a second, in the
spirit of FineWeb-Edu's annotator-distilled classifiers: answers are the seed outputs, web text is a sample of
the corpus segments being curated, so each run learns the contrast of its own seed against its own corpus.
"""

from __future__ import annotations

import math
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Sequence

_MARKERS = [
    (re.compile(r"```"), " __code__ "),
    (re.compile(r"https?://\S+"), " __url__ "),
    (re.compile(r"^\s*#+\s", re.M), " __heading__ "),
    (re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.M), " __item__ "),
    (re.compile(r"\n\s*\n"), " __para__ "),
    (re.compile(r"\n"), " __nl__ "),
]
_WORD = re.compile(r"__\w+__|\w+|[^\w\s]")


def features(text: str, max_chars: int = 3000) -> str:
    """The text as fastText sees it: lower-cased words and punctuation, with layout markers."""
    text = text[:max_chars]
    for pattern, token in _MARKERS:
        text = pattern.sub(token, text)
    return " ".join(_WORD.findall(text.lower()))


class StyleClassifier:
    """P(answer | text) from a fastText model with the labels ``answer`` and ``web``."""

    def __init__(self, model) -> None:
        self.model = model

    @classmethod
    def train(cls, answers: Sequence[str], web: Sequence[str], seed: int = 0, epoch: int = 30, dim: int = 32,
              word_ngrams: int = 2) -> "StyleClassifier":
        import fasttext

        if not answers or not web:
            raise ValueError("the style classifier needs answer texts and web texts")
        # balanced classes: the rarer side is repeated, so the prior does not decide
        n = max(len(answers), len(web))
        rng = random.Random(seed)
        rows = [f"__label__answer {features(t)}" for t in _cycle(answers, n)]
        rows += [f"__label__web {features(t)}" for t in _cycle(web, n)]
        rng.shuffle(rows)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
            path = f.name
        try:
            model = fasttext.train_supervised(path, epoch=epoch, dim=dim, wordNgrams=word_ngrams, lr=0.5,
                                              minCount=1, thread=1, seed=seed, verbose=0)
        finally:
            os.unlink(path)
        return cls(model)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StyleClassifier":
        import fasttext

        return cls(fasttext.load_model(str(path)))

    def save(self, path: str | os.PathLike) -> Path:
        from ..core.records import atomic_path

        with atomic_path(path, suffix=".bin") as tmp:
            self.model.save_model(str(tmp))
        return Path(path)

    def p_answer(self, texts: Sequence[str]) -> list[float]:
        labels, probs = self.model.predict([features(t) for t in texts], k=2)
        out = []
        for ls, ps in zip(labels, probs):
            d = dict(zip(ls, ps))
            out.append(float(d.get("__label__answer", 1.0 - d.get("__label__web", 0.5))))
        return out

    def log_odds(self, texts: Sequence[str]) -> list[float]:
        eps = 1e-4
        return [math.log(min(max(p, eps), 1 - eps) / (1 - min(max(p, eps), 1 - eps))) for p in self.p_answer(texts)]


def _cycle(items: Sequence[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


__all__ = ["StyleClassifier", "features"]
