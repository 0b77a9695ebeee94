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

from .config import ExtractConfig
from .readers import Quarantine, html_title, normalize_newlines

_WARMUP_PAGE = (
    "<html><body><article><h1>Warm-up</h1><p>A page to load trafilatura.</p></article></body></html>"
)


class HtmlToMarkdown(Trafilatura):
    name = "⛏ trafilatura → markdown"

    def __init__(self, cfg: ExtractConfig, quarantine_dir: str, quarantine_max_chars: int = 20_000):
        super().__init__(
            favour_precision=cfg.favor_precision,
            timeout=cfg.timeout_s,
            deduplicate=cfg.deduplicate,
            include_tables=cfg.include_tables,
        )
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
            with ExtractorSandbox(timeout=self.timeout, warmup_text=_WARMUP_PAGE) as extractor:
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
