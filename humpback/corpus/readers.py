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
from typing import Any, Iterator, Optional

import fsspec
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..config import ConfigError
from .config import ReadConfig

COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz"}
EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".warc": "warc",
    ".arc": "warc",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}
FILE_DOC_FORMATS = ("html", "markdown", "text")
# `--format` names a family; each family accepts these per-file formats.
FORMAT_FAMILIES = {
    "jsonl": ("jsonl",),
    "parquet": ("parquet",),
    "warc": ("warc",),
    "files": FILE_DOC_FORMATS,
    "hf-disk": ("arrow",),
}
HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class InputUnit:
    """One file to read: the unit of work that tasks share out."""

    url: str  # full path or URL, as fsspec opens it
    fmt: str  # jsonl | parquet | warc | html | markdown | text | arrow
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
    return EXTENSION_FORMATS.get(ext), comp


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
    if cfg.format == "parquet" or any(u.fmt == "parquet" for u in plan.units):
        _check_parquet_columns([u for u in plan.units if u.fmt == "parquet"], cfg)
    if any(u.fmt == "arrow" for u in plan.units):
        _check_arrow_columns([u for u in plan.units if u.fmt == "arrow"], cfg)
    return plan


def _plan_file(fs, path: str, given: str, cfg: ReadConfig) -> InputUnit:
    name = PurePosixPath(path).name
    fmt, comp = detect_file_format(name)
    if cfg.format == "hf-disk":
        raise ConfigError(f"{given}: --format hf-disk needs a folder written by datasets' save_to_disk")
    if cfg.format != "auto":
        allowed = FORMAT_FAMILIES[cfg.format]
        if fmt not in allowed:
            # An explicit format wins over the extension; a single document file defaults to text.
            fmt = allowed[0] if cfg.format != "files" else "text"
    elif fmt is None:
        raise ConfigError(
            f"{given}: unknown format (extension of '{name}' is not one of "
            f"{', '.join(sorted(EXTENSION_FORMATS))}, optionally .gz); pass --format"
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
    allowed = None if cfg.format == "auto" else FORMAT_FAMILIES[cfg.format]
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


class _Bad:
    """A record that cannot become a document."""

    __slots__ = ("reason", "doc_id", "position", "detail", "content", "size")

    def __init__(self, reason, doc_id=None, position=None, detail=None, content=None, size=None):
        self.reason, self.doc_id, self.position = reason, doc_id, position
        self.detail, self.content, self.size = detail, content, size


class _Skip:
    """A record that is not a document by design (blank line, image response in a WARC): counted, not kept."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


class _FileError(Exception):
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
                    except _FileError as e:
                        self.stat_update("records_in")
                        self._quarantine(unit, _Bad(e.reason, detail=str(e)))
                        count += 1
                        break
                    if item is None:
                        break
                    if isinstance(item, _Skip):
                        self.stat_update(f"skipped_{item.reason}")
                        continue
                    self.stat_update("records_in")
                    count += 1
                    if isinstance(item, _Bad):
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

    def _quarantine(self, unit: InputUnit, bad: _Bad) -> None:
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

    def _records(self, unit: InputUnit) -> Iterator[Document | _Bad | _Skip]:
        reader = {
            "jsonl": self._jsonl,
            "parquet": self._parquet,
            "arrow": self._arrow,
            "warc": self._warc,
            "html": self._file_doc,
            "markdown": self._file_doc,
            "text": self._file_doc,
        }[unit.fmt]
        return reader(unit)

    def _make_doc(
        self,
        unit: InputUnit,
        text: Any,
        doc_id: str,
        url: Any = None,
        title: Any = None,
        is_html: Optional[bool] = None,
        position: Any = None,
    ) -> Document | _Bad:
        if not isinstance(text, str):
            return _Bad(
                "missing_text",
                doc_id,
                position,
                detail=f"field '{self.cfg.text_key}' is {type(text).__name__}, not a string",
            )
        if not text.strip():
            return _Bad(
                "empty_document", doc_id, position, content=text, size=len(text.encode("utf-8", "replace"))
            )
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.cfg.max_doc_bytes:
            return _Bad(
                "too_large",
                doc_id,
                position,
                detail=f"{size} bytes > read.max_doc_bytes ({self.cfg.max_doc_bytes})",
                content=text[: self.cfg.quarantine_max_chars],
                size=size,
            )
        if is_html is None:
            is_html = self.cfg.html == "always" or (self.cfg.html == "auto" and looks_like_html(text))
        meta = {
            "source": unit.url,
            "doc_id": doc_id,
            "url": url if isinstance(url, str) and url else None,
            "title": title.strip() if isinstance(title, str) and title.strip() else None,
            "html": bool(is_html),
        }
        return Document(text=text if is_html else normalize_newlines(text), id=doc_id, metadata=meta)

    def _row_doc(self, unit: InputUnit, row: Any, default_id: str, position: Any) -> Document | _Bad:
        if not isinstance(row, dict):
            return _Bad(
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
            return _Bad(
                "missing_text",
                doc_id,
                position,
                detail=f"no field '{self.cfg.text_key}' (fields: {sorted(row)[:20]})",
            )
        return self._make_doc(
            unit,
            row[self.cfg.text_key],
            doc_id,
            url=row.get(self.cfg.url_key),
            title=row.get("title"),
            position=position,
        )

    def _jsonl(self, unit: InputUnit):
        import orjson

        cap = self.cfg.max_doc_bytes
        try:
            f = fsspec.open(unit.url, "rb", compression=unit.compression).open()
        except _STREAM_ERRORS as e:
            raise _FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            lineno = 0
            while True:
                try:
                    line = f.readline(cap + 2)
                except _STREAM_ERRORS as e:
                    raise _FileError(
                        "truncated_file", f"after line {lineno}: {type(e).__name__}: {e}"
                    ) from None
                if not line:
                    return
                lineno += 1
                default_id = f"{unit.rel}:{lineno}"
                if len(line) >= cap + 2 and not line.endswith(b"\n"):
                    size = len(line)
                    head = line[: self.cfg.quarantine_max_chars]
                    try:
                        while True:  # skip the rest of the oversized line without keeping it
                            chunk = f.readline(1 << 20)
                            size += len(chunk)
                            if not chunk or chunk.endswith(b"\n"):
                                break
                    except _STREAM_ERRORS as e:
                        yield _Bad(
                            "too_large",
                            default_id,
                            lineno,
                            detail=f"line of {size}+ bytes",
                            content=head,
                            size=size,
                        )
                        raise _FileError(
                            "truncated_file", f"in line {lineno}: {type(e).__name__}: {e}"
                        ) from None
                    yield _Bad(
                        "too_large",
                        default_id,
                        lineno,
                        detail=f"line of {size} bytes > read.max_doc_bytes ({cap})",
                        content=head,
                        size=size,
                    )
                    continue
                stripped = line.strip()
                if not stripped:
                    yield _Skip("blank_lines")
                    continue
                if len(stripped) > cap:
                    yield _Bad(
                        "too_large",
                        default_id,
                        lineno,
                        detail=f"line of {len(stripped)} bytes > read.max_doc_bytes ({cap})",
                        content=stripped,
                        size=len(stripped),
                    )
                    continue
                try:
                    stripped.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield _Bad(
                        "invalid_utf8",
                        default_id,
                        lineno,
                        detail=str(e),
                        content=stripped,
                        size=len(stripped),
                    )
                    continue
                try:
                    row = orjson.loads(stripped)
                except orjson.JSONDecodeError as e:
                    yield _Bad(
                        "invalid_json",
                        default_id,
                        lineno,
                        detail=str(e),
                        content=stripped,
                        size=len(stripped),
                    )
                    continue
                yield self._row_doc(unit, row, default_id, lineno)

    def _table_rows(self, unit: InputUnit, batches: Iterator) -> Iterator[Document | _Bad]:
        row_no = 0
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # pyarrow raises several types for corrupt data
                raise _FileError(
                    "truncated_file" if row_no else "unreadable_file",
                    f"after row {row_no}: {type(e).__name__}: {e}",
                ) from None
            if batch is None:
                return
            for start in range(0, batch.num_rows, 64):  # bound the Python copies of a large batch
                for row in batch.slice(start, 64).to_pylist():
                    row_no += 1
                    yield self._row_doc(unit, row, f"{unit.rel}:{row_no}", row_no)

    def _parquet(self, unit: InputUnit):
        import pyarrow.parquet as pq

        try:
            f = fsspec.open(unit.url, "rb").open()
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise _FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            yield from self._table_rows(unit, iter(pf.iter_batches(batch_size=256)))

    def _arrow(self, unit: InputUnit):
        import pyarrow as pa

        try:
            f = fsspec.open(unit.url, "rb").open()
            reader = pa.ipc.open_stream(f)
        except Exception as e:
            raise _FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            yield from self._table_rows(unit, iter(reader))

    def _file_doc(self, unit: InputUnit):
        cap = self.cfg.max_doc_bytes
        doc_id = unit.rel
        try:
            with fsspec.open(unit.url, "rb", compression=unit.compression) as f:
                raw = f.read(cap + 1)
        except _STREAM_ERRORS as e:
            raise _FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        if len(raw) > cap:
            yield _Bad(
                "too_large",
                doc_id,
                None,
                detail=f"file larger than read.max_doc_bytes ({cap})",
                content=raw[: self.cfg.quarantine_max_chars],
                size=unit.size,
            )
            return
        if unit.fmt == "html":
            text = decode_html(raw)
            if text is None:
                yield _Bad(
                    "undecodable",
                    doc_id,
                    None,
                    detail="no charset decodes the page",
                    content=raw,
                    size=len(raw),
                )
                return
            yield self._make_doc(unit, text, doc_id, is_html=True)
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            yield _Bad("invalid_utf8", doc_id, None, detail=str(e), content=raw, size=len(raw))
            return
        yield self._make_doc(unit, text, doc_id, is_html=self.cfg.html == "always")

    def _warc(self, unit: InputUnit):
        from warcio.archiveiterator import ArchiveIterator

        cap = self.cfg.max_doc_bytes
        try:
            f = fsspec.open(
                unit.url, "rb", compression=unit.compression if unit.compression != "gzip" else None
            ).open()
        except _STREAM_ERRORS as e:
            raise _FileError("unreadable_file", f"{type(e).__name__}: {e}") from None
        with f:
            records = iter(ArchiveIterator(f))
            ri = 0
            while True:
                try:
                    record = next(records, None)
                except Exception as e:  # warcio fails in many ways on a cut file (even AttributeError)
                    raise _FileError(
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
            raise _FileError("truncated_file", f"after record {ri - 1}: {type(e).__name__}: {e}") from None
        missing = getattr(raw, "limit", 0)
        if missing:
            raise _FileError(
                "truncated_file",
                f"after record {ri - 1}: record {ri} lacks {missing} of its {record.length} bytes",
            )

    def _warc_record(self, unit: InputUnit, record, ri: int, cap: int):
        rtype = record.rec_type
        if rtype not in ("response", "resource", "conversion"):
            return _Skip(f"warc_{rtype}_records")
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
                    return _Skip("warc_non_2xx_responses")
                ctype = http.get_header("Content-Type") or headers.get_header("WARC-Identified-Payload-Type")
            else:
                ctype = headers.get_header("Content-Type")
            if ctype and ctype.split(";")[0].strip().lower() not in HTML_CONTENT_TYPES:
                return _Skip("warc_non_html_records")
            is_html = True
        try:
            raw = record.content_stream().read(cap + 1)
        except Exception as e:  # the payload itself is cut short
            raise _FileError("truncated_file", f"after record {ri - 1}: {type(e).__name__}: {e}") from None
        if len(raw) > cap:
            length = headers.get_header("Content-Length")
            return _Bad(
                "too_large",
                doc_id,
                ri,
                detail=f"record payload larger than read.max_doc_bytes ({cap})",
                content=raw[: self.cfg.quarantine_max_chars],
                size=int(length) if length and length.isdigit() else None,
            )
        if is_html:
            if not ctype and not looks_like_html(raw[:8192].decode("latin-1")):
                return _Skip("warc_non_html_records")
            text = decode_html(raw, charset_from_content_type(ctype))
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            return _Bad(
                "undecodable",
                doc_id,
                ri,
                detail=f"no charset decodes the payload ({ctype})",
                content=raw,
                size=len(raw),
            )
        return self._make_doc(unit, text, doc_id, url=url, is_html=is_html, position=ri)
