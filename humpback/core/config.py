"""Typed configuration: pydantic models loaded from YAML, with errors that name the file and the key.

Every config model forbids unknown keys, because a misspelt key that is silently ignored makes a run do
something other than what its author believes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if "subkey" in (e.get("ctx") or {}):  # a key inside a free-form mapping (a PydanticCustomError's)
            lines.append(f"  {key}.{e['ctx']['subkey']}: {e['msg']}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def validate_config(model: type[T], data: dict[str, Any] | None, source: str = "<config>") -> T:
    try:
        return model.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{where}: not valid YAML: {what}"
                          + (f" (column {mark.column + 1})" if mark is not None else "")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(model: type[T], path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``model`` from a YAML file (or defaults when ``path`` is None), then apply non-None overrides."""
    data = load_yaml(path) if path else {}
    source = str(path) if path else "<defaults>"
    return validate_config(model, apply_overrides(data, overrides, source), source=source)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None, source: str = "<config>"
                    ) -> dict[str, Any]:
    """Set each dotted key of ``overrides`` (``{"lora.enabled": True}``) in ``data``; None values are skipped.

    Every config loader and ``--set`` go through here, so ``a.b.c`` means the same everywhere. Returns ``data``.
    """
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, last = key.split(".")
        cur = data
        for i, part in enumerate(parents):
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source}: {'.'.join(parents[:i + 1])}: must be a mapping of keys")
            cur = nxt
        cur[last] = value
    return data


def parse_set_options(model: type[BaseModel], items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as dotted overrides of ``model``; the value is read as YAML (3, true, [a, b]).

    A key that ``model`` does not have is an error naming it, before anything runs.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE (a dotted key such as train.epochs=2)")
        _check_key(model, key, item)
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({' '.join(str(e).split())})") from None
    return out


def with_set_options(model: type[BaseModel], items: Sequence[str], named: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of a command: its ``--set`` options, then its named options (which win) that were given."""
    return {**parse_set_options(model, items), **{k: v for k, v in named.items() if v is not None}}


def _check_key(model: type[BaseModel], key: str, item: str) -> None:
    parts = key.split(".")
    models: list[type[BaseModel]] = [model]
    for i, part in enumerate(parts):
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            raise ConfigError(f"--set {item}: unknown key '{'.'.join(parts[:i + 1])}'")
        if i == len(parts) - 1:
            return
        sections = [sub for f in fields for sub in _sections(f.annotation)]
        if any(sub is dict for sub in sections):
            return  # a free-form mapping: any key below it is the model's to judge
        models = [sub for sub in sections if sub is not dict]
        if not models:
            raise ConfigError(f"--set {item}: '{'.'.join(parts[:i + 1])}' is a value, not a section of keys")


OPTION_PREFIX = "config__"  # the click parameter of a config option: config__engine__batch_size


def config_option(model: Any, key: str, *decls: str, help: str = "", **attrs: Any):
    """A click option that sets the dotted config ``key`` of ``model`` (a config model, or a function returning
    one), with the type, choices and default shown in ``--help`` taken from the model's field, so the CLI cannot
    disagree with the config. A key the model does not have fails when the CLI is imported (a test imports it).
    The value reaches the config through :func:`config_overrides` in the command."""
    import types
    import typing

    import click

    model = model if isinstance(model, type) else model()
    field, default = _field_at(model, key)
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if "type" not in attrs and not attrs.get("is_flag"):
        if typing.get_origin(annotation) is Literal:
            attrs["type"] = click.Choice([str(v) for v in typing.get_args(annotation)])
        elif annotation is bool:
            if not any("/" in d for d in decls):
                attrs["is_flag"] = True
        elif annotation in (int, float, str):
            attrs["type"] = annotation
        else:
            raise TypeError(f"config_option {key}: no click type for {annotation}")
    if default is not None and default != "" and not attrs.get("is_flag") and \
            not isinstance(default, (list, dict, BaseModel)):
        help = f"{help} [{str(default).lower() if isinstance(default, bool) else default}]".strip()
    return click.option(*decls, OPTION_PREFIX + key.replace(".", "__"), default=None, help=help, **attrs)


def config_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The dotted overrides of a command's :func:`config_option` parameters (taken out of ``options``)."""
    return {name[len(OPTION_PREFIX):].replace("__", "."): options.pop(name)
            for name in [n for n in options if n.startswith(OPTION_PREFIX)]}


@functools.cache
def _defaults(model: type[BaseModel]) -> BaseModel | None:
    """One default instance per model for every option of it (None for a model with required keys)."""
    try:
        return model()
    except ValidationError:
        return None


def _field_at(model: type[BaseModel], key: str) -> tuple[Any, Any]:
    """The pydantic field of a dotted key, and its default under the model's own defaults."""
    current: Any = _defaults(model)
    for i, part in enumerate(parts := key.split(".")):
        if part not in model.model_fields:
            raise KeyError(f"{model.__name__} has no key {'.'.join(parts[:i + 1])}")
        field = model.model_fields[part]
        current = getattr(current, part, None) if current is not None else (
            None if field.is_required() or field.default_factory else field.default)
        if i < len(parts) - 1:
            subs = [t for t in _sections(field.annotation) if t is not dict]
            if not subs:
                raise KeyError(f"{model.__name__}: {'.'.join(parts[:i + 1])} is a value, not a section")
            model = subs[0]
    return field, current


def _sections(annotation: Any) -> list[Any]:
    """The config models (or ``dict`` for a free-form mapping) a field's type allows below it."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if annotation is dict or typing.get_origin(annotation) is dict or annotation is Any:
        return [dict]
    return [sub for arg in typing.get_args(annotation) for sub in _sections(arg)]


class GenerationConfig(StrictModel):
    """Sampling parameters; defaults are the paper's (T=0.7, top-p=0.9)."""

    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=1)
    max_tokens: int = Field(128, ge=1)
    n: int = Field(1, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0


class EndpointConfig(StrictModel):
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp, `transformers serve`) reached over HTTP.

    The engine's model name is the name the server serves. Finished requests are kept in an on-disk cache
    keyed by the request payload, so a rerun never sends them again.
    """

    base_url: str | None = None  # http://host:port (a trailing /v1 is accepted)
    api_key_env: str | None = None  # name of an environment variable holding the API key (never the key)
    max_concurrency: int = Field(16, ge=1)  # requests in flight at once
    timeout_s: float = Field(300.0, gt=0)  # per request
    max_retries: int = Field(12, ge=0)  # on 429, 5xx, timeouts, refused connections; backoff waits ~2-3 min in all
    backoff_s: float = Field(0.5, gt=0)  # first wait; doubles per attempt
    max_backoff_s: float = Field(30.0, gt=0)
    cache: bool = True
    # default: <stage work dir>/requests when a stage runs the engine, else $HUMPBACK_CACHE/requests
    cache_dir: str | None = None
    # prompt + completion tokens that may be sent in one run (cache hits are free); None: no limit
    token_budget: int | None = Field(None, ge=1)
    # server: chat messages go to /v1/chat/completions and the server applies the chat template;
    # local: they are rendered here with the tokenizer's template and sent to /v1/completions
    chat_template: Literal["server", "local"] = "server"
    # local tokenizer (alias, folder or HF id) for chat templates and token-id prompts (log-probabilities);
    # default: the model name itself when it resolves locally
    tokenizer: str | None = None
    top_logprobs: int = Field(20, ge=1)  # choice_logprobs reads the choices from this many top candidates


class VLLMConfig(StrictModel):
    """Servers that datatrove's InferenceRunner starts inside every task (GPU clusters)."""

    server: Literal["vllm", "sglang", "endpoint"] = "vllm"  # endpoint: an external server (engine.endpoint)
    tp: int = Field(1, ge=1)  # tensor parallelism (GPUs per model replica)
    dp: int = Field(1, ge=1)  # data parallelism (replicas per server)
    pp: int = Field(1, ge=1)  # pipeline parallelism
    model_max_context: int = Field(8192, ge=128)
    max_concurrent_generations: int = Field(500, ge=1)  # requests in flight per task
    max_concurrent_documents: int | None = Field(None, ge=1)  # default: generations / requests per document
    records_per_chunk: int = Field(1000, ge=1)  # documents per checkpointed chunk
    server_args: dict[str, Any] = Field(default_factory=dict)  # extra server flags, e.g. gpu-memory-utilization
    server_start_timeout_s: float = Field(600.0, gt=0)  # waiting for the server to answer, cold start included
    request_timeout_s: float | None = Field(None, gt=0)
    metric_interval_s: int = Field(120, ge=1)
    server_log_folder: str | None = None  # default: the stage's work folder


class EngineConfig(StrictModel):
    """Which back-end runs a model, and how."""

    kind: str = "transformers"  # a registered engine (built in: transformers | endpoint | vllm)
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(16, ge=1)
    max_batch_tokens: int = Field(16384, ge=64)  # bounds padded tokens per batch
    threads: Optional[int] = Field(None, ge=1)
    progress: bool = True
    endpoint: EndpointConfig = EndpointConfig()  # kind: endpoint (and vllm with server: endpoint)
    vllm: VLLMConfig = VLLMConfig()  # kind: vllm

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        from ..engines import ENGINES  # the engines import this module

        return ENGINES.check(v)
