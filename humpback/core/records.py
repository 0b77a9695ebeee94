"""Arrow schemas for every record humpback writes, and atomic readers/writers for them.

Every stage reads and writes these schemas, so provenance survives from the raw corpus to the exported
dataset. Writes go to a temporary file in the destination folder and are renamed into place, so a kill
never leaves a half-written file under its final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from .faults import fault_point

SEGMENT_SCHEMA = pa.schema(
    [
        ("segment_id", pa.string()),
        ("text", pa.string()),
        ("heading", pa.string()),
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("source", pa.string()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
    ]
)

SEED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("output", pa.string()),
        ("source", pa.string()),
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("instruction", pa.string()),
        ("output", pa.string()),
        ("segment_id", pa.string()),
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("backward_model", pa.string()),
        ("gen_params", pa.string()),  # JSON: sampling parameters used for this pair
        ("round", pa.int64()),
        # JSON list of best-of-k candidates [{instruction, pmi, reject_reason}]; null when one was sampled
        ("candidates", pa.string()),
    ]
)

SCORE_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("scorer", pa.string()),
        ("model", pa.string()),
        ("score", pa.float64()),  # 1-5, or null when the judge output could not be parsed
        ("score_probs", pa.list_(pa.float64(), 5)),
        ("expected_score", pa.float64()),
        ("pmi", pa.float64()),
        ("rationale", pa.string()),
    ]
)

# A scored pair: the candidate pair plus its score; the curated tier and the scoring checkpoints use it.
CURATED_SCHEMA = pa.schema(
    list(PAIR_SCHEMA) + [f for f in SCORE_SCHEMA if f.name != "pair_id"]
)

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
TRAINING_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("origin", pa.string()),  # seed | augmented
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "segment": SEGMENT_SCHEMA,
    "seed": SEED_SCHEMA,
    "pair": PAIR_SCHEMA,
    "score": SCORE_SCHEMA,
    "curated": CURATED_SCHEMA,
    "training": TRAINING_SCHEMA,
}


class RecordError(ValueError):
    """A record does not fit its schema; the message names the file, row and field."""


def _coerce_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema, where: str) -> pa.Table:
    columns: dict[str, list] = {f.name: [] for f in schema}
    for i, row in enumerate(rows):
        extra = set(row) - set(columns)
        if extra:
            raise RecordError(f"{where}: row {i}: unknown field(s) {sorted(extra)} for this schema")
        for name in columns:
            columns[name].append(row.get(name))
    arrays = []
    for f in schema:
        try:
            arrays.append(pa.array(columns[f.name], type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise RecordError(f"{where}: field '{f.name}' does not fit {f.type}: {e}") from e
    return pa.Table.from_arrays(arrays, schema=schema)


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema | str, where: str = "<records>") -> pa.Table:
    if isinstance(schema, str):
        schema = SCHEMAS[schema]
    return _coerce_rows(rows, schema, where)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    except OSError as e:  # name the file that could not be written, not a random temporary name
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; published files get the usual umask-derived mode so shared run dirs work.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        fault_point(f"write:{path.name}", path)
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno is not None and (e.filename is None or str(e.filename) == str(tmp_path)):
            # a full disk or a failed write names no file (or the temporary one): name the file being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: a file system or kernel without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def previous_version(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".previous")


def recover_dir(path: str | os.PathLike) -> None:
    """Put back a folder that a kill left as PATH.previous between the two renames of a fallback publish."""
    p, prev = Path(path), previous_version(path)
    if prev.is_dir() and not p.exists():
        os.replace(prev, p)


def publish_dir(staged: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make the complete folder ``staged`` appear at ``path``; an old ``path`` stays readable until then.

    With a folder at ``path`` already, both are swapped in one rename (RENAME_EXCHANGE) and the old one is
    removed after. Where that is not available the old folder is first renamed to PATH.previous, which
    ``recover_dir`` puts back if a kill comes between the two renames.
    """
    import shutil

    staged, path = Path(staged), Path(path)
    recover_dir(path)
    if not path.exists():
        os.replace(staged, path)
        return
    if _exchange(staged, path):
        shutil.rmtree(staged)  # now the old version
        return
    prev = previous_version(path)
    shutil.rmtree(prev, ignore_errors=True)
    os.replace(path, prev)
    os.replace(staged, path)
    shutil.rmtree(prev)


def write_parquet(
    rows_or_table: Iterable[Mapping[str, Any]] | pa.Table,
    path: str | os.PathLike,
    schema: pa.Schema | str | None = None,
) -> Path:
    """Write rows (validated against ``schema``) or a table to ``path`` atomically."""
    if isinstance(rows_or_table, pa.Table):
        table = rows_or_table
        if schema is not None:
            target = SCHEMAS[schema] if isinstance(schema, str) else schema
            table = table.select(target.names).cast(target)
    else:
        if schema is None:
            raise ValueError("write_parquet needs a schema when given rows")
        table = to_table(rows_or_table, schema, where=str(path))
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    with atomic_path(path, suffix=".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file humpback wrote (stats.json, manifest.json); a RecordError naming it when it is damaged."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise RecordError(f"{p}:{line}: not UTF-8 text: byte 0x{raw[e.start]:02x}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of a JSONL or JSONL.gz file, streaming.

    A bad line is a user error in the input: it raises RecordError naming the file and line rather than
    being skipped, so no record disappears silently.
    """
    import gzip
    import zlib

    p = Path(path)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    lineno = 0
    try:
        # bytes, decoded line by line, so that a bad byte is reported with its line and column
        with opener(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = decode_utf8(raw, p, lineno).rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"{p}:{lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(record, dict):
                    raise RecordError(f"{p}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record
    except EOFError:  # gzip's "Compressed file ended before the end-of-stream marker was reached"
        raise RecordError(f"{p}:{lineno + 1}: truncated gzip file (its data stops after line {lineno}; "
                          "download or copy it again)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise RecordError(f"{p}:{lineno + 1}: corrupt gzip data ({e})") from None


def decode_utf8(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """One line of a text file as str; a RecordError naming the file, line and column when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[:e.start].decode("utf-8", errors="replace")) + 1
        raise RecordError(f"{path}:{lineno}: not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column}") from None


def read_parquet_file(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """pq.read_table with a RecordError naming the file when it is not Parquet (or is cut short)."""
    try:
        return pq.read_table(path, columns=columns)
    except pa.ArrowInvalid as e:
        raise RecordError(f"{path}: not a readable Parquet file ({_arrow_reason(e)})") from None


def parquet_schema(path: str | os.PathLike) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except pa.ArrowInvalid as e:
        raise RecordError(f"{path}: not a readable Parquet file ({_arrow_reason(e)})") from None


def _arrow_reason(e: Exception) -> str:
    """pyarrow's message without its "Could not open Parquet input source '<path>': " preamble."""
    text = str(e)
    return text.split("': ", 1)[1] if text.startswith("Could not open") and "': " in text else text


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of a file or folder (recursively), in a stable order; temp files skipped."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return sorted(f for f in p.rglob("*.parquet") if not f.name.startswith("."))


def read_table(path: str | os.PathLike, schema: pa.Schema | str | None = None) -> pa.Table:
    """Read a Parquet file or every shard of a folder into one table (optionally checked against a schema)."""
    files = parquet_files(path)
    if not files:
        target = SCHEMAS[schema] if isinstance(schema, str) else schema
        if target is None:
            raise FileNotFoundError(f"{path}: no Parquet files")
        return target.empty_table()
    tables = [read_parquet_file(f) for f in files]
    if schema is not None:
        target = SCHEMAS[schema] if isinstance(schema, str) else schema
        checked = []
        for f, t in zip(files, tables):
            missing = [n for n in target.names if n not in t.column_names]
            if missing:
                raise RecordError(f"{f}: missing column(s) {missing}")
            checked.append(t.select(target.names).cast(target))
        tables = checked
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def read_rows(path: str | os.PathLike, schema: pa.Schema | str | None = None) -> list[dict[str, Any]]:
    return read_table(path, schema).to_pylist()


# ------------------------------------------------------------------------------ reading records of any input
# Files a folder's records are read from (a run folder's stats.json and manifest.json are not records), and
# the names a single file may have besides (``.json``: a JSON array or JSON lines).
FOLDER_RECORD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
FILE_RECORD_SUFFIXES = FOLDER_RECORD_SUFFIXES + (".json", ".json.gz", ".ndjson")


@dataclass(frozen=True)
class Location:
    """Where a record was read, for error messages: its file and its line (JSONL), row (Parquet) or item (a
    JSON array). ``str()`` is ``FILE:LINE``, ``FILE row I`` or ``FILE item I`` (0-based I)."""

    file: Path
    index: int  # 0-based position of the record in its file
    kind: str = "line"  # line | row | item
    line: int | None = None  # JSONL: the line number (blank lines count)

    @property
    def number(self) -> int:
        """1-based: the line of a JSONL record, else its row or item number."""
        return self.line if self.line is not None else self.index + 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.kind == "line" else f"{self.file} {self.kind} {self.index}"


def record_format(path: str | os.PathLike) -> str | None:
    """``parquet`` or ``jsonl`` (JSON lines, or a JSON array in a .json file) from a file's name; None if neither."""
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    return "jsonl" if name.endswith(FILE_RECORD_SUFFIXES) else None


def record_files(path: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The record files of a file or folder: a folder's Parquet and JSONL files (only ``fmt``'s when given),
    recursively and sorted, hidden or temporary files and folders (.work) skipped."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if fmt is None and record_format(p) is None:
            raise RecordError(f"{p}: expected a .parquet or .jsonl file")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.name.lower().endswith(FOLDER_RECORD_SUFFIXES) and f.is_file()
                   and fmt in (None, record_format(f))
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise FileNotFoundError(f"{p}: no .parquet or .jsonl files in this folder")
    return files


def read_records(path: str | os.PathLike, fmt: str | None = None, columns: list[str] | None = None
                 ) -> Iterator[tuple[Location, dict[str, Any]]]:
    """(location, record) for every record of a JSONL/Parquet file or a folder of them, in file order.

    The one reader of user-given records (seed, training data, pairs to curate, evaluation data, exclusions,
    stats). ``fmt`` reads a file as ``parquet`` or ``jsonl`` whatever its name (and a folder's files of that
    format only); ``columns`` reads only those Parquet columns. A missing path fails here, a bad record when
    it is reached: a RecordError naming the file and line or row.
    """
    from itertools import chain

    files = record_files(path, fmt)
    return chain.from_iterable(_file_records(f, fmt or record_format(f), columns) for f in files)


def _file_records(path: Path, fmt: str | None, columns: list[str] | None
                  ) -> Iterator[tuple[Location, dict[str, Any]]]:
    if fmt == "parquet":
        for i, row in enumerate(read_parquet_file(path, columns=columns).to_pylist()):
            yield Location(path, i, "row"), row
        return
    if path.name.lower().endswith((".json", ".json.gz")):
        text = _read_text(path)
        if text.lstrip().startswith("["):  # a JSON array (the Alpaca release and AlpacaEval ship data this way)
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise RecordError(f"{path}: item {i}: expected a JSON object, got {type(item).__name__}")
                yield Location(path, i, "item"), item
            return
    for i, (lineno, record) in enumerate(iter_jsonl(path)):
        yield Location(path, i, "line", lineno), record


def _read_text(path: Path) -> str:
    """A whole (optionally gzipped) UTF-8 file; RecordErrors naming it, and the line of a bad byte."""
    import gzip

    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
    except EOFError:
        raise RecordError(f"{path}: truncated gzip file (download or copy it again)") from None
    except gzip.BadGzipFile as e:
        raise RecordError(f"{path}: corrupt gzip data ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        decode_utf8(raw[raw.rfind(b"\n", 0, e.start) + 1:].split(b"\n", 1)[0], path, line)
        raise
