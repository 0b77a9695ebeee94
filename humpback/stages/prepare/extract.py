"""HTML → markdown with trafilatura, headings kept, so the segmenter can find the sections of a page.

Built on datatrove's Trafilatura extractor and its sandbox process (a per-document timeout that survives a
pathological page), but documents that are not HTML pass through untouched, and a page that yields no text,
times out or crashes the extractor is quarantined with its reason instead of disappearing.
"""

from __future__ import annotations

import logging

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.extractors.base import ExtractorSandbox
from datatrove.pipeline.extractors.trafilatura import Trafilatura

from ...core.runs import RunError
from .config import ExtractConfig
from .readers import Quarantine, html_title, normalize_newlines

log = logging.getLogger(__name__)

_WARMUP_PAGE = (
    "<html><body><article><h1>Warm-up</h1><p>A page to load trafilatura.</p></article></body></html>"
)


class ExtractorStartError(RunError):
    """The extractor process did not start: the task fails (and reruns on resume) rather than quarantine pages;
    the command reports it in one line."""


class Sandbox(ExtractorSandbox):
    """datatrove's sandbox, whose start is allowed ``startup_timeout`` instead of the per-page ``timeout``.

    datatrove waits for a new extractor process (forked, importing trafilatura, extracting the warm-up page) as
    long as for one page and then raises the page's TimeoutError, so on a loaded machine a slow start cost the
    page that was next, quarantined as an extract timeout. A start that fails is tried again (a process forked
    from a threaded one, like a Ray worker, can hang on a lock held at the fork); one that never succeeds fails
    the task."""

    def __init__(self, timeout: float, startup_timeout: float, warmup_text: str = "", attempts: int = 3) -> None:
        super().__init__(timeout=timeout, warmup_text=warmup_text)
        self.startup_timeout, self.attempts = startup_timeout, attempts

    def _ensure_process(self, extract_fn) -> None:
        if self.process is not None and self.process.is_alive():
            return
        page_timeout, self.timeout = self.timeout, self.startup_timeout
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    return super()._ensure_process(extract_fn)
                except TimeoutError:
                    log.warning("the extractor process did not start within %ss (attempt %d of %d)",
                                self.startup_timeout, attempt, self.attempts)
        finally:
            self.timeout = page_timeout
        raise ExtractorStartError(f"the trafilatura extractor process did not start within "
                                  f"extract.startup_timeout_s ({self.startup_timeout}s), {self.attempts} times; a "
                                  f"rerun resumes (raise the key on a loaded machine)")


class HtmlToMarkdown(Trafilatura):
    name = "⛏ trafilatura → markdown"

    def __init__(self, cfg: ExtractConfig, quarantine_dir: str, quarantine_max_chars: int = 20_000):
        super().__init__(
            favour_precision=cfg.favor_precision,
            timeout=cfg.timeout_s,
            deduplicate=cfg.deduplicate,
            include_tables=cfg.include_tables,
        )
        self.startup_timeout = cfg.startup_timeout_s
        self.quarantine = Quarantine(quarantine_dir, "extract", quarantine_max_chars)

    def extract(self, text: str) -> str:
        from trafilatura import extract

        return extract(
            text,
            output_format="markdown",
            include_formatting=True,  # renders <h1>-<h6> as '#' headings
            include_comments=False,
            include_links=False,
            include_images=False,
            favor_precision=self.favour_precision,
            deduplicate=self.deduplicate,
            **self.kwargs,
        )

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.quarantine.start(rank)
        # trafilatura logs an ERROR line for every page it cannot parse; those pages are counted and
        # quarantined here, so its own log would only repeat them, interleaved with the progress bars
        logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
        try:
            # datatrove warms the sandbox up with "", which trafilatura reports as an unparsable document
            with Sandbox(self.timeout, self.startup_timeout, warmup_text=_WARMUP_PAGE) as extractor:
                for doc in data:
                    if not doc.metadata.get("html"):
                        self.stat_update("passed_through")
                        yield doc
                        continue
                    self.stat_update("html_pages")
                    source, doc_id = doc.metadata.get("source"), doc.metadata.get("doc_id")
                    with self.track_time():
                        try:
                            text = extractor.process_document(doc.text, self.extract)
                        except TimeoutError:
                            self._drop(
                                "extract_timeout",
                                source,
                                doc_id,
                                doc.text,
                                f"trafilatura took longer than extract.timeout_s ({self.timeout}s)",
                            )
                            continue
                        except EOFError:
                            self._drop(
                                "extract_crashed", source, doc_id, doc.text, "the extractor process died"
                            )
                            continue
                        except ExtractorStartError:
                            raise
                        except Exception as e:  # trafilatura/lxml errors on malformed markup
                            self._drop("extract_error", source, doc_id, doc.text, f"{type(e).__name__}: {e}")
                            continue
                    if not text or not text.strip():
                        self._drop(
                            "no_text_extracted", source, doc_id, doc.text, "trafilatura found no main text"
                        )
                        continue
                    if not doc.metadata.get("title"):
                        doc.metadata["title"] = html_title(doc.text)
                    doc.text = normalize_newlines(text)
                    self.stat_update("extracted")
                    yield doc
        finally:
            self.quarantine.close()

    def _drop(self, reason: str, source, doc_id, content: str, detail: str) -> None:
        self.stat_update("quarantined", f"quarantined_{reason}")
        self.quarantine.put(
            reason,
            source,
            doc_id=doc_id,
            detail=detail,
            content=content,
            size=len(content.encode("utf-8", "replace")),
        )
