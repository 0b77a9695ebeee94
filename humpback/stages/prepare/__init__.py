"""Corpus preparation (``humpback prepare``): raw web/markdown corpora → self-contained segments.

datatrove steps for reading with a quarantine, HTML extraction, heading segmentation, language and quality
filtering, and exact + MinHash deduplication; :func:`run_prepare` builds and runs the pipeline.
"""

from .config import PrepareConfig, load_prepare_config
from .pipeline import PrepareResult, format_summary, run_prepare

__all__ = ["PrepareConfig", "PrepareResult", "format_summary", "load_prepare_config", "run_prepare"]
