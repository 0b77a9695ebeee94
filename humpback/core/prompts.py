"""Prompt templates: ``humpback/resources/prompts/*.jinja`` rendered in a sandbox, then through the model's chat
template.

Templates are rendered by a jinja2 ``SandboxedEnvironment`` with ``StrictUndefined``: user-supplied
templates cannot reach Python internals, and a misspelt variable is an error instead of an empty string.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

# The shipped templates, package data (so a wheel install has them too). A render's extra folders come first,
# then HUMPBACK_PROMPTS (a user folder), then these: a user can override any template by its name.
BUILTIN_PROMPTS = Path(__file__).resolve().parents[1] / "resources" / "prompts"


class PromptError(ValueError):
    pass


def _search_path(extra: Sequence[str | os.PathLike] = ()) -> list[str]:
    paths = [str(p) for p in extra]
    if os.environ.get("HUMPBACK_PROMPTS"):
        paths.append(os.environ["HUMPBACK_PROMPTS"])
    paths.append(str(BUILTIN_PROMPTS))
    return paths


def clip(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, cut back to a word boundary (a template filter)."""
    text = str(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > limit // 2 else cut).rstrip()


# Corpus text and model outputs reach prompts only inside these tags, which a text cannot forge: every
# occurrence of any of them (any case, any spacing) is removed from the text first, so a document can neither
# close its own block nor open another. See docs/security.md for what a hostile corpus can and cannot do.
DELIMITERS = ("text", "request", "answer", "answer_a", "answer_b")
_TAG = re.compile(r"<\s*/?\s*(?:" + "|".join(DELIMITERS) + r")\s*/?\s*>", re.I)


def strip_delimiters(text: str) -> str:
    prev = None
    text = str(text)
    while prev != text:  # "<te<text>xt>" must not become a tag once the inner one is gone
        prev, text = text, _TAG.sub("", text)
    return text


def data(text: str, tag: str) -> str:
    """``text`` as data between ``<tag>`` and ``</tag>`` (a template filter: ``{{ output | data("text") }}``)."""
    if tag not in DELIMITERS:
        raise PromptError(f"data filter: unknown delimiter {tag!r} (one of {', '.join(DELIMITERS)})")
    return f"<{tag}>\n{strip_delimiters(text).strip()}\n</{tag}>"


def environment(extra_dirs: Sequence[str | os.PathLike] = ()) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(_search_path(extra_dirs)),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["clip"] = clip
    env.filters["data"] = data
    return env


def render(name: str, /, extra_dirs: Sequence[str | os.PathLike] = (), **variables: Any) -> str:
    """Render ``name`` (e.g. ``backward`` or ``backward.jinja``, or a path to a .jinja file)."""
    path = Path(name)
    if path.suffix == ".jinja" and path.is_file():
        env = environment([path.parent, *extra_dirs])
        template_name = path.name
    else:
        env = environment(extra_dirs)
        template_name = name if name.endswith(".jinja") else f"{name}.jinja"
    try:
        template = env.get_template(template_name)
    except TemplateNotFound:
        raise PromptError(f"prompt template '{template_name}' not found in {_search_path(extra_dirs)}") from None
    try:
        return template.render(**variables).strip()
    except UndefinedError as e:
        raise PromptError(f"prompt template '{template_name}': {e.message}") from None


def chat_messages(user: str, system: Optional[str] = None) -> list[dict[str, str]]:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return messages


def apply_chat_template(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            f"tokenizer of {getattr(tokenizer, 'name_or_path', '?')} has no chat template; "
            "give a raw prompt instead of chat messages"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
