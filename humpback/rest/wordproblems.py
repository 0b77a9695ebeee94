"""Seeded, templated multi-step arithmetic word problems with exact answers (the ReST-EM quickstart task).

A problem is a story about one person's collection of things: a start, then a chain of operations (gets
more, gives some away, buys packs, keeps a share), then a question. Difficulty levels set the number of
operations, which kinds may appear and how large the numbers get; level 6 ends by sharing among friends,
so its answer may be a fraction. Every intermediate quantity is a positive integer, so the reference
answer is exact and the step list (kept as ``solution``) is checkable arithmetic.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Leo", "Maya",
         "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki", "Zoe")
ITEMS = (("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("book", "books"),
         ("cookie", "cookies"), ("pencil", "pencils"), ("coin", "coins"), ("stamp", "stamps"), ("card", "cards"),
         ("shell", "shells"), ("balloon", "balloons"), ("crayon", "crayons"))
PACKS = ("box", "bag", "pack", "jar", "basket")


@dataclass(frozen=True)
class Level:
    """One difficulty level: ``ops`` operations drawn from ``kinds``, numbers up to ``max_value``."""

    ops: int
    kinds: tuple[str, ...]
    max_value: int
    share_at_end: bool = False  # the question asks for an equal share (possibly a fraction)


LEVELS: dict[int, Level] = {
    1: Level(1, ("add",), 10),
    2: Level(1, ("add", "sub"), 20),
    3: Level(2, ("add", "sub"), 50),
    4: Level(3, ("add", "sub", "packs"), 100),
    5: Level(4, ("add", "sub", "packs", "times", "keep_part"), 200),
    6: Level(4, ("add", "sub", "packs", "times", "keep_part"), 400, share_at_end=True),
}


def _pack_plural(pack: str) -> str:
    return pack + ("es" if pack.endswith(("x", "sh", "ch", "s")) else "s")


class _Story:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.name, friend = rng.sample(NAMES, 2)
        self.friend = friend
        self.item, self.items = rng.choice(ITEMS)
        self.pack = rng.choice(PACKS)
        self.sentences: list[str] = []
        self.steps: list[str] = []

    def things(self, k: int) -> str:
        return f"{k} {self.item if k == 1 else self.items}"

    def more(self, k: int) -> str:
        return f"{k} more {self.item if k == 1 else self.items}"


def _start(story: _Story, level: Level) -> int:
    rng = story.rng
    if level.ops >= 3 and rng.random() < 0.4:
        boxes, each = rng.randint(2, 6), rng.randint(3, 12)
        q = boxes * each
        story.sentences.append(f"{story.name} has {boxes} {_pack_plural(story.pack)} with "
                               f"{story.things(each)} in each.")
        story.steps.append(f"{boxes} * {each} = {q}")
        return q
    q = rng.randint(3, max(5, level.max_value // 2))
    story.sentences.append(f"{story.name} has {story.things(q)}.")
    return q


def _operation(story: _Story, kind: str, q: int, level: Level) -> int | None:
    """Apply one operation to quantity ``q``; None when it cannot keep every quantity a positive integer."""
    rng, name, friend = story.rng, story.name, story.friend
    if kind == "add":
        k = rng.randint(1, max(2, min(level.max_value - q, level.max_value // 2)))
        if q + k > level.max_value:
            return None
        story.sentences.append(rng.choice([
            f"{name} finds {story.more(k)}.", f"{friend} gives {name} {story.things(k)}.",
            f"Then {name} buys {story.more(k)}.", f"{name} wins {story.things(k)} at a fair."]))
        story.steps.append(f"{q} + {k} = {q + k}")
        return q + k
    if kind == "sub":
        if q < 2:
            return None
        k = rng.randint(1, q - 1)
        story.sentences.append(rng.choice([
            f"{name} gives {story.things(k)} to {friend}.", f"{name} loses {story.things(k)}.",
            f"Then {name} uses {story.things(k)}.", f"{name} sells {story.things(k)}."]))
        story.steps.append(f"{q} - {k} = {q - k}")
        return q - k
    if kind == "packs":
        packs, each = rng.randint(2, 5), rng.randint(2, 10)
        if q + packs * each > level.max_value:
            return None
        story.sentences.append(f"{name} buys {packs} {_pack_plural(story.pack)} with {story.things(each)} in each.")
        story.steps.append(f"{packs} * {each} = {packs * each}")
        story.steps.append(f"{q} + {packs * each} = {q + packs * each}")
        return q + packs * each
    if kind == "times":
        m = rng.choice((2, 3))
        if q * m > level.max_value:
            return None
        word = {2: "doubles", 3: "triples"}[m]
        story.sentences.append(f"The number of {story.items} {name} has {word}.")
        story.steps.append(f"{q} * {m} = {q * m}")
        return q * m
    if kind == "keep_part":
        divisors = [d for d in (2, 3, 4, 5) if q % d == 0 and q // d >= 1]
        if not divisors:
            return None
        d = rng.choice(divisors)
        part = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}[d]
        given = q // d
        story.sentences.append(f"{name} gives {part} of the {story.items} to {friend}.")
        story.steps.append(f"{q} / {d} = {given}")
        story.steps.append(f"{q} - {given} = {q - given}")
        return q - given
    raise ValueError(f"unknown operation kind {kind!r}")


def make_problem(rng: random.Random, level: int) -> dict:
    """One problem of ``level`` (1-6): ``problem``, ``answer`` (integer or a/b), ``solution`` steps."""
    if level not in LEVELS:
        raise ValueError(f"difficulty level must be one of {sorted(LEVELS)}, got {level}")
    spec = LEVELS[level]
    for _ in range(200):
        story = _Story(rng)
        q = _start(story, spec)
        ok = True
        # every kind the level allows beyond add/sub should appear at least once when there is room
        kinds = [rng.choice(spec.kinds) for _ in range(spec.ops)]
        for kind in kinds:
            nxt = _operation(story, kind, q, spec)
            if nxt is None:
                ok = False
                break
            q = nxt
        if not ok:
            continue
        if spec.share_at_end:
            friends = rng.randint(2, 8)
            answer = Fraction(q, friends)
            story.sentences.append(f"{story.name} shares all the {story.items} equally among {friends} friends. "
                                   f"How many {story.items} does each friend get? "
                                   "If it is not a whole number, give it as a fraction.")
            story.steps.append(f"{q} / {friends} = {answer}")
        else:
            answer = Fraction(q)
            story.sentences.append(f"How many {story.items} does {story.name} have now?")
        return {"problem": " ".join(story.sentences), "answer": str(answer), "difficulty": level,
                "solution": "; ".join(story.steps)}
    raise RuntimeError(f"could not build a level-{level} problem in 200 tries")  # pragma: no cover


def generate_problems(count: int, levels: Sequence[int] = tuple(LEVELS), seed: int = 0,
                      id_prefix: str = "arith", exclude: Iterable[str] = ()) -> list[dict]:
    """``count`` distinct problems, levels in rotation, deterministic for a seed; ``exclude``: texts to avoid."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if not levels:
        raise ValueError("levels must not be empty")
    rng = random.Random(f"{id_prefix}:{seed}")
    seen = set(exclude)
    out: list[dict] = []
    tries = 0
    for level in _rotation(levels):
        if len(out) >= count:
            break
        tries += 1
        if tries > 50 * count + 100:
            raise ValueError(f"could not find {count} distinct problems for levels {list(levels)}")
        p = make_problem(rng, level)
        if p["problem"] in seen:
            continue
        seen.add(p["problem"])
        out.append({"id": f"{id_prefix}-{seed}-{len(out):05d}", **p})
    return out


def _rotation(levels: Sequence[int]) -> Iterator[int]:
    while True:
        yield from levels


__all__ = ["LEVELS", "Level", "generate_problems", "make_problem"]
