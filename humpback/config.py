"""Typed configuration: pydantic models loaded from YAML, with errors that name the file and the key.

Every config model forbids unknown keys, because a misspelt key that is silently ignored makes a run do
something other than what its author believes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
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
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(model: type[T], path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``model`` from a YAML file (or defaults when ``path`` is None), then apply non-None overrides."""
    data = load_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    return validate_config(model, data, source=str(path) if path else "<defaults>")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


class GenerationConfig(StrictModel):
    """Sampling parameters; defaults are the paper's (T=0.7, top-p=0.9)."""

    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=1)
    max_tokens: int = Field(128, ge=1)
    n: int = Field(1, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0


class EngineConfig(StrictModel):
    """Which back-end runs a model, and how."""

    kind: Literal["transformers", "endpoint", "vllm"] = "transformers"
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(16, ge=1)
    max_batch_tokens: int = Field(16384, ge=64)  # bounds padded tokens per batch
    threads: Optional[int] = Field(None, ge=1)
    progress: bool = True
