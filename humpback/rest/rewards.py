"""Binary rewards for ReST-EM: small pluggable classes that accept or reject one sampled solution.

A reward has a ``name``, an ``Options`` model (its config keys, strict), ``check_problem`` (why a problem
cannot be graded, or None; such problems are quarantined at load time) and ``grade`` (one completion ->
``Grade``). Built in: ``math-answer`` and ``code-tests``. Others are added with ``register_reward`` or named
in a config as ``package.module:ClassName``.
"""

from __future__ import annotations

import abc
import importlib
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator

from ..core.config import ConfigError, StrictModel, validate_config
from ..core.registry import Registry
from .answers import answers_equal, canonical, extract_answer
from .problems import Problem
from .sandbox import SandboxLimits, SandboxResult, count_statements, require_isolation, run_python, run_tests


@dataclass
class Grade:
    reward: float  # 1.0 accepted, 0.0 rejected
    extracted: str | None  # what was judged: the final answer, or the candidate program
    key: str | None  # what majority voting groups by (None: this reward has no notion of "same answer")
    detail: str  # how it matched, or why it did not


class Reward(abc.ABC):
    name: ClassVar[str]
    votable: ClassVar[bool] = False  # majority-vote accuracy is meaningful (equal answers can be grouped)

    class Options(StrictModel):
        pass

    def __init__(self, options: StrictModel | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def check_problem(self, problem: Problem) -> str | None:
        """Why ``problem`` cannot be graded by this reward (quarantine reason), or None."""
        return None

    @abc.abstractmethod
    def grade(self, completion: str, problem: Problem) -> Grade:
        """Grade one completion for ``problem``."""

    def grade_many(self, items: Sequence[tuple[str, Problem]]) -> list[Grade]:
        return [self.grade(c, p) for c, p in items]


# ------------------------------------------------------------------------------------------------ math


class MathAnswerReward(Reward):
    """1 when the solution's final answer equals the reference (exact, numeric or symbolic equivalence)."""

    name = "math-answer"
    votable = True

    class Options(StrictModel):
        # Fall back to the last number of the text when there is no \boxed{} or "Answer:" line.
        last_number_fallback: bool = True
        # A decimal with at least this many places is accepted for a non-terminating reference it rounds to.
        min_rounding_decimals: int = Field(2, ge=1)

    def check_problem(self, problem: Problem) -> str | None:
        if problem.answer is None or not str(problem.answer).strip():
            return "no reference answer"
        return None

    def grade(self, completion: str, problem: Problem) -> Grade:
        found = extract_answer(completion, last_number=self.options.last_number_fallback)
        if found is None:
            return Grade(0.0, None, None, "no answer found")
        match = answers_equal(found.text, str(problem.answer), self.options.min_rounding_decimals)
        return Grade(1.0 if match.equal else 0.0, found.text, canonical(found.text), f"{found.method}:{match.how}")


# ------------------------------------------------------------------------------------------------ code

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str | None:
    """The last fenced code block (```python ... ```), or the whole text when it has no fence."""
    blocks = _FENCE.findall(completion)
    if blocks:
        return blocks[-1].strip("\n")
    open_fence = re.search(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*)$", completion, re.DOTALL | re.IGNORECASE)
    if open_fence:  # cut off by max_tokens before the closing fence
        return open_fence.group(1)
    text = completion.strip()
    return text or None


def normalize_tests(tests: Any) -> tuple[str, Any]:
    """("io", [(stdin, expected stdout), ...]) or ("assert", source); raises ValueError when malformed."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            if not tests.strip():
                raise ValueError("tests is empty")
            return "assert", _checked_asserts(tests)
        if isinstance(tests, str):
            return "assert", _checked_asserts(tests)
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:  # APPS: {"inputs": [], "outputs": []}
        ins, outs = tests["inputs"], tests["outputs"]
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise ValueError("tests.inputs and tests.outputs must be lists of equal length")
        tests = [{"input": i, "output": o} for i, o in zip(ins, outs)]
    if isinstance(tests, list) and tests:
        cases = []
        for i, t in enumerate(tests):
            if not isinstance(t, dict) or "output" not in t:
                raise ValueError(f"tests[{i}] must be an object with 'input' and 'output'")
            cases.append((_as_text(t.get("input", "")), _as_text(t["output"])))
        return "io", cases
    raise ValueError("tests must be assert code (a string), a list of {input, output}, or {inputs, outputs}")


def _checked_asserts(source: str) -> str:
    try:
        n = count_statements(source)
    except SyntaxError as e:
        raise ValueError(f"assert tests are not valid Python: {e.msg} (line {e.lineno})") from None
    if n == 0:
        raise ValueError("assert tests have no statements")
    return source


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def outputs_match(got: str, expected: str) -> bool:
    """Same lines ignoring trailing whitespace and blank lines at the ends; else same whitespace tokens."""
    g = [line.rstrip() for line in got.strip().splitlines()]
    e = [line.rstrip() for line in expected.strip().splitlines()]
    return g == e or got.split() == expected.split()


class CodeTestsReward(Reward):
    """1 when the program passes every test, each run in a bubblewrap sandbox (humpback.rest.sandbox).

    Constructing it checks that the sandbox works here and raises ``SandboxUnavailable`` (a ConfigError)
    where it does not: model-written code is never run without OS-level isolation.
    """

    name = "code-tests"

    class Options(StrictModel):
        timeout_s: float = Field(5.0, gt=0)  # wall clock per test run
        cpu_s: int = Field(5, ge=1)
        memory_mb: int = Field(512, ge=64)
        output_bytes: int = Field(1024 * 1024, ge=1024)
        max_processes: int = Field(32, ge=4)  # processes + threads in one sandbox (its init and harness too)
        disk_mb: int = Field(64, ge=1)  # the sandbox's only writable place, a tmpfs
        workers: int = Field(2, ge=1)  # sandboxes run at once
        unshare_network: bool = True  # kept so old configs load; the sandbox never has a network
        max_tests: int | None = Field(None, ge=1)  # grade on the first N io tests only

        @field_validator("unshare_network")
        @classmethod
        def _network_is_never_shared(cls, v: bool) -> bool:
            if not v:
                raise ValueError("code-tests always runs without a network (bwrap --unshare-net); "
                                 "remove unshare_network")
            return v

    def __init__(self, options: StrictModel | None = None) -> None:
        super().__init__(options)
        require_isolation()

    def limits(self) -> SandboxLimits:
        o = self.options
        return SandboxLimits(timeout_s=o.timeout_s, cpu_s=o.cpu_s, memory_mb=o.memory_mb,
                             output_bytes=o.output_bytes, max_processes=o.max_processes, disk_mb=o.disk_mb)

    def check_problem(self, problem: Problem) -> str | None:
        if problem.tests is None:
            return "no tests"
        try:
            normalize_tests(problem.tests)
        except ValueError as e:
            return f"bad tests: {e}"
        return None

    def grade(self, completion: str, problem: Problem) -> Grade:
        code = extract_code(completion)
        if not code:
            return Grade(0.0, None, None, "no code found")
        kind, tests = normalize_tests(problem.tests)
        limits = self.limits()
        if kind == "assert":
            # the verdict is the harness's nonce-bearing line, never the exit status (see sandbox.py)
            res = run_tests(code, tests, limits)
            if res.ok:
                return Grade(1.0, code, None, f"passed {res.passed} asserts")
            return Grade(0.0, code, None, f"asserts {res.status}: {_why(res)}")
        if self.options.max_tests:
            tests = tests[: self.options.max_tests]
        for i, (stdin, expected) in enumerate(tests):
            res = run_python(code, stdin, limits)
            if not res.ok:
                return Grade(0.0, code, None, f"test {i} {res.status}: {_why(res)}")
            if not outputs_match(res.stdout, expected):
                return Grade(0.0, code, None, f"test {i} wrong output")
        return Grade(1.0, code, None, f"passed {len(tests)} tests")

    def grade_many(self, items: Sequence[tuple[str, Problem]]) -> list[Grade]:
        if self.options.workers <= 1 or len(items) <= 1:
            return super().grade_many(items)
        with ThreadPoolExecutor(self.options.workers) as pool:  # each grade waits on subprocesses
            return list(pool.map(lambda cp: self.grade(*cp), items))


def _why(res: SandboxResult) -> str:
    return (res.detail or _last_line(res.stderr))[:200]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# ------------------------------------------------------------------------------------------------ registry

REWARDS: Registry[type[Reward]] = Registry("reward", "reward.kind")


def register_reward(cls: type[Reward]) -> type[Reward]:
    """Make ``cls`` available by its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Reward)) or not getattr(cls, "name", None):
        raise TypeError("a reward is a Reward subclass with a `name`")
    return REWARDS.register(cls.name, cls)


register_reward(MathAnswerReward)
register_reward(CodeTestsReward)


def reward_class(kind: str) -> type[Reward]:
    if kind in REWARDS:
        return REWARDS.get(kind)
    if ":" in kind:
        module, _, attr = kind.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"reward.kind: cannot import {kind!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Reward)):
            raise ConfigError(f"reward.kind: {kind!r} is not a humpback.rest.rewards.Reward subclass")
        return cls
    raise ConfigError(f"{REWARDS.unknown(kind)} (or 'package.module:ClassName')")


def make_reward(kind: str, options: dict[str, Any] | None = None) -> Reward:
    cls = reward_class(kind)
    return cls(validate_config(cls.Options, options or {}, source="reward.options"))


__all__ = [
    "REWARDS",
    "CodeTestsReward",
    "Grade",
    "MathAnswerReward",
    "Reward",
    "extract_code",
    "make_reward",
    "normalize_tests",
    "outputs_match",
    "register_reward",
    "reward_class",
]
