"""Input planning (format detection, checks before any work) and robust, streaming readers with a quarantine.

datatrove's own readers skip a bad line or a corrupt file with a log warning; here every record that cannot
become a document is counted under a reason and written, with that reason, to ``quarantine/`` so nothing
vanishes silently. Reading is bounded per record (``read.max_doc_bytes``): an oversized JSONL line is
skipped in chunks, never loaded whole.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable, Iterator, Optional

import fsspec
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ...core.config import ConfigError
from ...core.registry import Registry
from .config import ReadConfig

COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz"}


@dataclass(frozen=True)
class CorpusFormat:
    """What a ``read.format`` name (``--format``) reads: its kinds of file, and how one file of them is read.

    ``read(reader, unit)`` yields, for one file, Documents made with ``reader.make_doc`` / ``reader.row_doc``
    (which turn a bad record into a quarantine entry), ``Bad`` and ``Skip`` items, and raises ``FileError``
    when the rest of the file cannot be read. ``check(units, cfg)`` may refuse the input before any work.
    """

    files: dict[str, tuple[str, ...]]  # per-file format (InputUnit.fmt) -> its extensions, e.g. {"jsonl": (".jsonl",)}
    read: Callable[..., Iterator]
    check: Optional[Callable[[list["InputUnit"], ReadConfig], None]] = None


# `read.format` names; the built-in ones are registered at the end of this module, after their readers.
CORPUS_FORMATS: Registry[CorpusFormat] = Registry("corpus format", "read.format")


def _extension_formats() -> dict[str, str]:
    return {ext: fmt for f in map(CORPUS_FORMATS.get, CORPUS_FORMATS) for fmt, exts in f.files.items() for ext in exts}


def _format_of(fmt: str) -> CorpusFormat:
    """The registered format that reads files of per-file format ``fmt``."""
    return next(f for f in map(CORPUS_FORMATS.get, CORPUS_FORMATS) if fmt in f.files)


HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class InputUnit:
    """One file to read: the unit of work that tasks share out."""

    url: str  # full path or URL, as fsspec opens it
    fmt: str  # a key of a CorpusFormat's files: jsonl | parquet | warc | html | markdown | text | arrow
    rel: str  # path relative to the input it came from, used in default document ids
    compression: Optional[str] = None
    size: Optional[int] = None
    mtime: Optional[str] = None


@dataclass
class InputPlan:
    units: list[InputUnit]
    exclude: Optional[str] = None
    inputs: list[dict[str, Any]] = field(default_factory=list)  # per INPUT: path, format, files
    ignored_files: list[str] = field(default_factory=list)  # files in input folders with no known format


def split_compression(name: str) -> tuple[str, Optional[str]]:
    lower = name.lower()
    for suffix, comp in COMPRESSION_SUFFIXES.items():
        if lower.endswith(suffix):
            return name[: -len(suffix)], comp
    return name, None


def detect_file_format(name: str) -> tuple[Optional[str], Optional[str]]:
    """(format, compression) from a file name, or (None, compression) when the extension is unknown."""
    stem, comp = split_compression(name)
    ext = os.path.splitext(stem.lower())[1]
    return _extension_formats().get(ext), comp


def _info_stamp(info: dict[str, Any]) -> Optional[str]:
    for key in ("mtime", "LastModified", "last_modified", "updated", "ETag", "etag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return None


def _unit(fs, path: str, fmt: str, rel: str, comp: Optional[str], info: Optional[dict] = None) -> InputUnit:
    info = info if info is not None else fs.info(path)
    url = path if _is_local(fs) else fs.unstrip_protocol(path)
    return InputUnit(
        url=url, fmt=fmt, rel=rel, compression=comp, size=info.get("size"), mtime=_info_stamp(info)
    )


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _hf_disk_units(fs, root: str, given: str) -> list[InputUnit]:
    """Arrow shards of a ``datasets`` dataset (or every split of a DatasetDict) saved with save_to_disk."""
    if fs.exists(f"{root}/dataset_dict.json"):
        with fs.open(f"{root}/dataset_dict.json", "r") as f:
            splits = json.load(f).get("splits", [])
        units: list[InputUnit] = []
        for split in splits:
            units.extend(_hf_disk_units(fs, f"{root}/{split}", given))
        return units
    with fs.open(f"{root}/state.json", "r") as f:
        state = json.load(f)
    files = [d["filename"] for d in state.get("_data_files", [])]
    if not files:
        raise ConfigError(f"{given}: datasets folder lists no data files in state.json")
    base = PurePosixPath(root)
    units = []
    for name in files:
        path = str(base / name)
        if not fs.exists(path):
            raise FileNotFoundError(f"{given}: data file {name} named in state.json is missing")
        units.append(_unit(fs, path, "arrow", os.path.relpath(path, given if _is_local(fs) else root), None))
    return units


def _is_hf_disk(fs, path: str) -> bool:
    return fs.exists(f"{path}/dataset_dict.json") or (
        fs.exists(f"{path}/state.json") and fs.exists(f"{path}/dataset_info.json")
    )


def plan_inputs(inputs: list[str], cfg: ReadConfig, exclude: Optional[str] = None) -> InputPlan:
    """Resolve every INPUT into files of a known format; fail before any work on a missing or unknown one.

    ``exclude`` is a local folder (the output) whose files are never inputs, even inside an input folder:
    otherwise a rerun would read the first run's shards and quarantine files as corpus.
    """
    if not inputs:
        raise ConfigError("no INPUT given")
    plan = InputPlan(units=[], exclude=os.path.abspath(exclude) if exclude else None)
    for given in inputs:
        fs, path = fsspec.core.url_to_fs(given)
        path = path.rstrip("/") or "/"
        if not fs.exists(path):
            raise FileNotFoundError(f"{given}: no such file or folder")
        if fs.isdir(path):
            units = _plan_folder(fs, path, given, cfg, plan)
            kind = "hf-disk" if units and units[0].fmt == "arrow" else "folder"
        else:
            units = [_plan_file(fs, path, given, cfg)]
            kind = units[0].fmt
        if not units:
            raise ConfigError(
                f"{given}: no readable files (expected .jsonl[.gz], .parquet, .warc[.gz], .html/.md/.txt, "
                "or a datasets folder saved with save_to_disk)"
            )
        plan.units.extend(units)
        plan.inputs.append({"path": given, "format": kind, "files": len(units)})
    for name in CORPUS_FORMATS:
        f = CORPUS_FORMATS.get(name)
        units = [u for u in plan.units if u.fmt in f.files]
        if f.check is not None and units:
            f.check(units, cfg)
    return plan


def _plan_file(fs, path: str, given: str, cfg: ReadConfig) -> InputUnit:
    name = PurePosixPath(path).name
    fmt, comp = detect_file_format(name)
    if cfg.format == "hf-disk":
        raise ConfigError(f"{given}: --format hf-disk needs a folder written by datasets' save_to_disk")
    if cfg.format != "auto":
        allowed = tuple(CORPUS_FORMATS.get(cfg.format).files)
        if fmt not in allowed:
            # An explicit format wins over the extension; a single document file defaults to text.
            fmt = allowed[0] if cfg.format != "files" else "text"
    elif fmt is None:
        raise ConfigError(
            f"{given}: unknown format (extension of '{name}' is not one of "
            f"{', '.join(sorted(_extension_formats()))}, optionally .gz); pass --format"
        )
    if comp == "zstd":
        _require_zstd(given)
    return _unit(fs, path, fmt, name, comp)


def _plan_folder(fs, path: str, given: str, cfg: ReadConfig, plan: InputPlan) -> list[InputUnit]:
    if cfg.format == "hf-disk" or (cfg.format == "auto" and _is_hf_disk(fs, path)):
        if not _is_hf_disk(fs, path):
            raise ConfigError(
                f"{given}: not a datasets folder (no state.json/dataset_info.json or dataset_dict.json)"
            )
        return _hf_disk_units(fs, path, path)
    allowed = None if cfg.format == "auto" else tuple(CORPUS_FORMATS.get(cfg.format).files)
    units = []
    for file_path, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        rel_parts = PurePosixPath(file_path).relative_to(PurePosixPath(path)).parts
        if any(part.startswith(".") for part in rel_parts):  # hidden files and folders (.git, .cache, ...)
            continue
        if plan.exclude and _is_local(fs) and (file_path + "/").startswith(plan.exclude.rstrip("/") + "/"):
            continue
        name = PurePosixPath(file_path).name
        fmt, comp = detect_file_format(name)
        if fmt is None or (allowed is not None and fmt not in allowed):
            plan.ignored_files.append(file_path)
            continue
        if comp == "zstd":
            _require_zstd(given)
        rel = str(PurePosixPath(file_path).relative_to(PurePosixPath(path)))
        units.append(_unit(fs, file_path, fmt, rel, comp, info))
    return units


def _require_zstd(given: str) -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{given}: reading .zst needs the zstandard package (pip install zstandard)"
        ) from None


def _check_parquet_columns(units: list[InputUnit], cfg: ReadConfig) -> None:
    import pyarrow.parquet as pq

    for u in units:
        try:
            with fsspec.open(u.url, "rb") as f:
                names = pq.ParquetFile(f).schema_arrow.names
        except Exception:  # a corrupt file is quarantined at read time, not refused here
            continue
        if cfg.text_key not in names:
            raise ConfigError(f"{u.url}: no column '{cfg.text_key}' (columns: {names}); pass --text-key")


def _check_arrow_columns(units: list[InputUnit], cfg: ReadConfig) -> None:
    import pyarrow as pa

    u = units[0]
    try:
        with fsspec.open(u.url, "rb") as f:
            names = pa.ipc.open_stream(f).schema.names
    except Exception:
        return
    if cfg.text_key not in names:
        raise ConfigError(f"{u.url}: no column '{cfg.text_key}' (columns: {names}); pass --text-key")


# --- HTML helpers -------------------------------------------------------------------------------------------

_HTML_START = re.compile(
    r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_TAG = re.compile(r"<[a-zA-Z/!][^>]{0,400}>")
_ATX_LINE = re.compile(r"^ {0,3}#{1,6}\s", re.M)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)


def looks_like_html(text: str) -> bool:
    """A whole page (doctype/<html>/<head>/<body> first), or a fragment that is mostly tags with no markdown
    headings. Markdown READMEs with a few inline tags (badges, <p align=center>) stay markdown."""
    if _HTML_START.match(text[:2048]):
        return True
    head = text[:8192]
    tags = _TAG.findall(head)
    if len(tags) < 5 or _ATX_LINE.search(head):
        return False
    return sum(len(t) for t in tags) / max(len(head), 1) > 0.2


def html_title(page: str) -> Optional[str]:
    m = _TITLE.search(page[:65536])
    if not m:
        return None
    title = re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", "", m.group(1)))).strip()
    return title or None


def decode_html(raw: bytes, declared: Optional[str] = None) -> Optional[str]:
    """Bytes of a page → text: the declared charset, the page's <meta charset>, UTF-8, then a guess."""
    candidates = []
    if declared:
        candidates.append(declared)
    m = _META_CHARSET.search(raw[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii", "ignore"))
    candidates.append("utf-8")
    for enc in candidates:
        try:
            return raw.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        import cchardet

        guess = cchardet.detect(raw).get("encoding")
    except ImportError:  # datatrove's WARC extra brings it; without it only declared charsets are tried
        guess = None
    if guess:
        try:
            return raw.decode(guess)
        except (UnicodeDecodeError, LookupError):
            return None
    return None


def charset_from_content_type(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:\-]+)", value, re.I)
    return m.group(1) if m else None


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


# --- quarantine ---------------------------------------------------------------------------------------------


class Quarantine:
    """Per-task JSONL file of rejected records: reason, where it came from, and (a prefix of) its content.

    A task that is re-run after a crash starts its file afresh, so a resumed run never repeats an entry.
    """

    def __init__(self, folder: str, prefix: str, max_chars: int):
        self.folder = folder
        self.prefix = prefix
        self.max_chars = max_chars
        self._path: Optional[str] = None
        self._f = None

    def start(self, rank: int) -> None:
        self._path = os.path.join(self.folder, f"{self.prefix}-{rank:05d}.jsonl")
        if os.path.exists(self._path):
            os.remove(self._path)
        self._f = None

    def put(
        self,
        reason: str,
        source: str,
        doc_id: Optional[str] = None,
        position: Any = None,
        detail: Optional[str] = None,
        content: Any = None,
        size: Optional[int] = None,
    ) -> None:
        """``content`` may be a prefix of the record; ``size`` is the whole record's size, if known."""
        if self._f is None:
            os.makedirs(self.folder, exist_ok=True)
            self._f = open(self._path, "w", encoding="utf-8")
        truncated = False
        if isinstance(content, (bytes, bytearray)):
            truncated = size is not None and len(content) < size
            content = bytes(content[: self.max_chars * 4]).decode("utf-8", "replace")
        elif isinstance(content, str):
            truncated = size is not None and len(content.encode("utf-8", "replace")) < size
        if isinstance(content, str):
            truncated = truncated or len(content) > self.max_chars
            content = content[: self.max_chars]
        rec = {
            "reason": reason,
            "source": source,
            "doc_id": doc_id,
            "position": position,
            "detail": detail,
            "size_bytes": size,
            "content": content,
            "content_truncated": truncated,
        }
        self._f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Bad:
    """A record that cannot become a document."""

    __slots__ = ("reason", "doc_id", "position", "detail", "content", "size")

    def __init__(self, reason, doc_id=None, position=None, detail=None, content=None, size=None):
        self.reason, self.doc_id, self.position = reason, doc_id, position
        self.detail, self.content, self.size = detail, content, size


class Skip:
    """A record that is not a document by design (blank line, image response in a WARC): counted, not kept."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


class FileError(Exception):
    """The rest of a file cannot be read (truncated or corrupt); what came before it is kept."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


_STREAM_ERRORS = (EOFError, OSError, zlib.error)


class CorpusReader(PipelineStep):
    """Reads this task's share of the input files (file i goes to task i mod tasks) into Documents."""

    type = "📖 - READER"
    name = "📚 humpback corpus reader"

    def __init__(
        self, units: list[InputUnit], cfg: ReadConfig, quarantine_dir: str, progress_dir: Optional[str] = None
    ):
        super().__init__()
        self.units = units
        self.cfg = cfg
        self.quarantine = Quarantine(quarantine_dir, "read", cfg.quarantine_max_chars)
        self.progress_dir = progress_dir

    # progress is a tiny file per task that the launching process sums; it works across processes and hosts
    def _report(self, rank: int, count: int, force: bool = False) -> None:
        if not self.progress_dir:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        self._last_report = now
        os.makedirs(self.progress_dir, exist_ok=True)
        tmp = os.path.join(self.progress_dir, f".{rank:05d}.tmp")
        with open(tmp, "w") as f:
            f.write(str(count))
        os.replace(tmp, os.path.join(self.progress_dir, f"{rank:05d}"))

    def _limit_for(self, rank: int, world_size: int) -> Optional[int]:
        if self.cfg.limit is None:
            return None
        return self.cfg.limit // world_size + (1 if rank < self.cfg.limit % world_size else 0)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self.quarantine.start(rank)
        self._last_report = 0.0
        limit = self._limit_for(rank, world_size)
        count = 0
        try:
            for unit in self.units[rank::world_size]:
                if limit is not None and count >= limit:
                    break
                self.stat_update("input_files")
                records = self._records(unit)
                while True:
                    try:
                        with self.track_time():
                            item = next(records, None)
                    except FileError as e:
                        self.stat_update("records_in")
                        self._quarantine(unit, Bad(e.reason, detail=str(e)))
                        count += 1
                        break
                    if item is None:
                        break
                    if isinstance(item, Skip):
                        self.stat_update(f"skipped_{item.reason}")
                        continue
                    self.stat_update("records_in")
                    count += 1
                    if isinstance(item, Bad):
                        self._quarantine(unit, item)
                    else:
                        self.stat_update("documents")
                        self.update_doc_stats(item)
                        yield item
                    self._report(rank, count)
                    if limit is not None and count >= limit:
                        break
                records.close()
        finally:
            self.quarantine.close()
            self._report(rank, count, force=True)

    def _quarantine(self, unit: InputUnit, bad: Bad) -> None:
        self.stat_update("quarantined", f"quarantined_{bad.reason}")
        self.quarantine.put(
            bad.reason,
            unit.url,
            doc_id=bad.doc_id,
            position=bad.position,
            detail=bad.detail,
            content=bad.content,
            size=bad.size,
        )

    # --- per format -----------------------------------------------------------------------------------------

    def _records(self, unit: InputUnit) -> Iterator[Document | Bad | Skip]:
        return _format_of(unit.fmt).read(self, unit)

    def make_doc(
        self,
        unit: InputUnit,
        text: Any,
        doc_id: str,
        url: Any = None,
        title: Any = None,
        is_html: Optional[bool] = None,
        position: Any = None,
    ) -> Document | Bad:
        if not isinstance(text, str):
            return Bad(
                "missing_text",
                doc_id,
                position,
                detail=f"field '{self.cfg.text_key}' is {type(text).__name__}, not a string",
            )
        if not text.strip():
            return Bad(
                "empty_document", doc_id, position, content=text, size=len(text.encode("utf-8", "replace"))
            )
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.cfg.max_doc_bytes:
            return self.too_large(doc_id, position, f"{size} bytes > read.max_doc_bytes ({self.cfg.max_doc_bytes})",
                                  text, size)
        if is_html is None:
            is_html = self.cfg.html == "always" or (self.cfg.html == "auto" and looks_like_html(text))
        meta = {
            "source": unit.url,
            # the path relative to the input given: segment ids hash it, so a corpus moved to another folder
            # or machine keeps its ids (and every seeded choice made from them)
            "source_key": unit.rel,
            "doc_id": doc_id,
            "url": url if isinstance(url, str) and url else None,
            "title": title.strip() if isinstance(title, str) and title.strip() else None,
            "html": bool(is_html),
        }
        return Document(text=text if is_html else normalize_newlines(text), id=doc_id, metadata=meta)

    def too_large(self, doc_id: str, position: Any, detail: str, content: Any, size: Optional[int]) -> Bad:
        """An oversized record: quarantined with the head of its content only."""
        return Bad("too_large", doc_id, position, detail=detail, content=content[: self.cfg.quarantine_max_chars],
                   size=size)

    def row_doc(self, unit: InputUnit, row: Any, default_id: str, position: Any) -> Document | Bad:
        if not isinstance(row, dict):
            return Bad(
                "invalid_record",
                default_id,
                position,
                detail=f"a JSON {type(row).__name__}, not an object",
                content=json.dumps(row, ensure_ascii=False, default=str),
            )
        raw_id = row.get(self.cfg.id_key)
        doc_id = (
            str(raw_id) if raw_id not in (None, "") and not isinstance(raw_id, (dict, list)) else default_id
        )
        if self.cfg.text_key not in row:
            return Bad(
                "missing_text",
                doc_id,
                position,
                detail=f"no field '{self.cfg.text_key}' (fields: {sorted(row)[:20]})",
            )
        return self.make_doc(
            unit,
            row[self.cfg.text_key],
            doc_id,
            url=row.get(self.cfg.url_key),
            title=row.get("title"),
            position=position,
        )

    def _jsonl(self, unit: InputUnit):
        cap = self.cfg.max_doc_bytes
        try:
            f = fsspec.open(unit.url, "rb", compression=unit.compression).open()
        except _STREAM_ERRORS as e:
            raise FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            lineno = 0
            while True:
                try:
                    line = f.readline(cap + 2)
                except _STREAM_ERRORS as e:
                    raise FileError(
                        "truncated_file", f"after line {lineno}: {type(e).__name__}: {e}"
                    ) from None
                if not line:
                    return
                lineno += 1
                default_id = f"{unit.rel}:{lineno}"
                if len(line) >= cap + 2 and not line.endswith(b"\n"):
                    size = len(line)
                    cut = None
                    try:
                        while True:  # skip the rest of the oversized line without keeping it
                            chunk = f.readline(1 << 20)
                            size += len(chunk)
                            if not chunk or chunk.endswith(b"\n"):
                                break
                    except _STREAM_ERRORS as e:
                        cut = e
                    detail = (f"line of {size}+ bytes" if cut is not None
                              else f"line of {size} bytes > read.max_doc_bytes ({cap})")
                    yield self.too_large(default_id, lineno, detail, line, size)
                    if cut is not None:
                        raise FileError("truncated_file", f"in line {lineno}: {type(cut).__name__}: {cut}") from None
                    continue
                stripped = line.strip()
                if not stripped:
                    yield Skip("blank_lines")
                    continue
                yield self._jsonl_record(unit, stripped, default_id, lineno)

    def _jsonl_record(self, unit: InputUnit, line: bytes, default_id: str, lineno: int) -> Document | Bad:
        """One non-blank JSONL line: its document, or why it cannot be one (with the line kept)."""
        import orjson

        def bad(reason: str, detail: str) -> Bad:
            return Bad(reason, default_id, lineno, detail=detail, content=line, size=len(line))

        if len(line) > self.cfg.max_doc_bytes:
            return bad("too_large", f"line of {len(line)} bytes > read.max_doc_bytes ({self.cfg.max_doc_bytes})")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return bad("invalid_utf8", str(e))
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return bad("invalid_json", str(e))
        return self.row_doc(unit, row, default_id, lineno)

    def _parquet(self, unit: InputUnit):
        import pyarrow.parquet as pq

        return self._table_rows(unit, lambda f: pq.ParquetFile(f).iter_batches(batch_size=256))

    def _arrow(self, unit: InputUnit):
        import pyarrow as pa

        return self._table_rows(unit, pa.ipc.open_stream)

    def _table_rows(self, unit: InputUnit, open_batches: Callable[[Any], Any]) -> Iterator[Document | Bad]:
        """Rows of a Parquet or Arrow file, ``open_batches(file)`` giving its record batches."""
        try:
            f = fsspec.open(unit.url, "rb").open()
            batches = iter(open_batches(f))
        except Exception as e:
            raise FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            yield from self._batch_rows(unit, batches)

    def _batch_rows(self, unit: InputUnit, batches: Iterator) -> Iterator[Document | Bad]:
        row_no = 0
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # pyarrow raises several types for corrupt data
                raise FileError(
                    "truncated_file" if row_no else "unreadable_file",
                    f"after row {row_no}: {type(e).__name__}: {e}",
                ) from None
            if batch is None:
                return
            for start in range(0, batch.num_rows, 64):  # bound the Python copies of a large batch
                for row in batch.slice(start, 64).to_pylist():
                    row_no += 1
                    yield self.row_doc(unit, row, f"{unit.rel}:{row_no}", row_no)

    def _file_doc(self, unit: InputUnit):
        cap = self.cfg.max_doc_bytes
        doc_id = unit.rel
        try:
            with fsspec.open(unit.url, "rb", compression=unit.compression) as f:
                raw = f.read(cap + 1)
        except _STREAM_ERRORS as e:
            raise FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        if len(raw) > cap:
            yield self.too_large(doc_id, None, f"file larger than read.max_doc_bytes ({cap})", raw, unit.size)
            return
        if unit.fmt == "html":
            text = decode_html(raw)
            if text is None:
                yield Bad(
                    "undecodable",
                    doc_id,
                    None,
                    detail="no charset decodes the page",
                    content=raw,
                    size=len(raw),
                )
                return
            yield self.make_doc(unit, text, doc_id, is_html=True)
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            yield Bad("invalid_utf8", doc_id, None, detail=str(e), content=raw, size=len(raw))
            return
        yield self.make_doc(unit, text, doc_id, is_html=self.cfg.html == "always")

    def _warc(self, unit: InputUnit):
        from warcio.archiveiterator import ArchiveIterator

        cap = self.cfg.max_doc_bytes
        try:
            f = fsspec.open(
                unit.url, "rb", compression=unit.compression if unit.compression != "gzip" else None
            ).open()
        except _STREAM_ERRORS as e:
            raise FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            records = iter(ArchiveIterator(f))
            ri = 0
            while True:
                try:
                    record = next(records, None)
                except Exception as e:  # warcio fails in many ways on a cut file (even AttributeError)
                    raise FileError(
                        "truncated_file" if ri else "unreadable_file",
                        f"after record {ri}: {type(e).__name__}: {e}",
                    ) from None
                if record is None:
                    return
                ri += 1
                item = self._warc_record(unit, record, ri, cap)
                self._check_record_complete(record, ri)
                yield item

    @staticmethod
    def _check_record_complete(record, ri: int) -> None:
        """warcio ends quietly when a .warc.gz is cut inside a record, handing out a shortened payload; the
        record's block reader still knows how many of its Content-Length bytes never arrived."""
        raw = record.raw_stream
        try:
            while raw.read(1 << 16):
                pass
        except Exception as e:
            raise FileError("truncated_file", f"after record {ri - 1}: {type(e).__name__}: {e}") from None
        missing = getattr(raw, "limit", 0)
        if missing:
            raise FileError(
                "truncated_file",
                f"after record {ri - 1}: record {ri} lacks {missing} of its {record.length} bytes",
            )

    def _warc_record(self, unit: InputUnit, record, ri: int, cap: int):
        rtype = record.rec_type
        if rtype not in ("response", "resource", "conversion"):
            return Skip(f"warc_{rtype}_records")
        headers = record.rec_headers
        doc_id = headers.get_header("WARC-Record-ID") or f"{unit.rel}:{ri}"
        url = headers.get_header("WARC-Target-URI")
        if rtype == "conversion":
            ctype, is_html = "text/plain", False
        else:
            http = record.http_headers
            if rtype == "response" and http is not None:
                status = http.get_statuscode()
                if not (status or "").startswith("2"):
                    return Skip("warc_non_2xx_responses")
                ctype = http.get_header("Content-Type") or headers.get_header("WARC-Identified-Payload-Type")
            else:
                ctype = headers.get_header("Content-Type")
            if ctype and ctype.split(";")[0].strip().lower() not in HTML_CONTENT_TYPES:
                return Skip("warc_non_html_records")
            is_html = True
        try:
            raw = record.content_stream().read(cap + 1)
        except Exception as e:  # the payload itself is cut short
            raise FileError("truncated_file", f"after record {ri - 1}: {type(e).__name__}: {e}") from None
        if len(raw) > cap:
            length = headers.get_header("Content-Length")
            return self.too_large(doc_id, ri, f"record payload larger than read.max_doc_bytes ({cap})", raw,
                                  int(length) if length and length.isdigit() else None)
        if is_html:
            if not ctype and not looks_like_html(raw[:8192].decode("latin-1")):
                return Skip("warc_non_html_records")
            text = decode_html(raw, charset_from_content_type(ctype))
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            return Bad(
                "undecodable",
                doc_id,
                ri,
                detail=f"no charset decodes the payload ({ctype})",
                content=raw,
                size=len(raw),
            )
        return self.make_doc(unit, text, doc_id, url=url, is_html=is_html, position=ri)


# In this order they are listed by --format and in errors. A format in a module of its own is a line here:
# CORPUS_FORMATS.register("name", "humpback.stages.prepare.module:FORMAT") (docs/extending.md).
CORPUS_FORMATS.register("jsonl", CorpusFormat({"jsonl": (".jsonl", ".ndjson")}, CorpusReader._jsonl))
CORPUS_FORMATS.register("parquet", CorpusFormat({"parquet": (".parquet", ".pq")}, CorpusReader._parquet,
                                                check=_check_parquet_columns))
CORPUS_FORMATS.register("warc", CorpusFormat({"warc": (".warc", ".arc")}, CorpusReader._warc))
CORPUS_FORMATS.register("files", CorpusFormat(
    {"html": (".html", ".htm", ".xhtml"), "markdown": (".md", ".markdown"), "text": (".txt",)},
    CorpusReader._file_doc))
# a folder written by datasets' save_to_disk (found by its state.json, not by extension: see _plan_folder)
CORPUS_FORMATS.register("hf-disk", CorpusFormat({"arrow": ()}, CorpusReader._arrow, check=_check_arrow_columns))
