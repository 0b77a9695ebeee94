"""What this machine's CPU can do fast, where the choice of number format depends on it."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("humpback")


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether the CPU multiplies bf16 matrices natively (AMX or AVX512-BF16). Without those units torch emulates
    bf16 matmuls, measured ~25x slower than fp32 on a 2-core AVX2 machine; with AMX they are ~4x faster."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: keep what was configured
        return True


def cpu_dtype(name: str) -> str:
    """The dtype to load a model in on CPU for a configured ``name``: bfloat16 falls back to float32 (once
    logged) where the CPU has no bf16 units."""
    if name == "bfloat16" and not cpu_has_bf16_units():
        _warn_once()
        return "float32"
    return name


@functools.cache
def _warn_once() -> None:
    log.warning("this CPU has no bf16 matrix units (AMX / AVX512-BF16): models run in float32 instead of "
                "bfloat16, which would be many times slower here")
