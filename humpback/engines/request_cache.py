"""On-disk memory of finished endpoint requests, and the token ledger a run's budget is checked against.

Both are small SQLite files. SQLite is used instead of one file per request because a paper-scale run sends
millions of requests, and because several datatrove workers write to one cache at once (SQLite serialises
the writers; the busy timeout makes them wait instead of failing). The default rollback journal is kept, not
WAL, because WAL does not work on the network filesystems that cluster work folders often live on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from ..core.config import ConfigError


class TokenBudgetExceeded(ConfigError):
    """The run has sent as many tokens as engine.endpoint.token_budget allows.

    A ConfigError, so the command line reports it in one line: raising the budget and rerunning is the fix,
    and the rerun replays every finished request from the cache for free.
    """


def request_key(path: str, payload: dict[str, Any], sample: int = 0) -> str:
    """Hash of the canonical request: endpoint path, payload (model, prompt, sampling, seed) and the sample
    index, which tells apart the n samples of an unseeded request whose payloads are otherwise equal."""
    canonical = json.dumps({"path": path, "payload": payload, "sample": sample}, sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=120.0, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class RequestCache:
    """Responses by request key. Used from one thread (the engine's event loop)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _connect(self.path)
            self._conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response BLOB NOT NULL, "
                               "tokens INTEGER NOT NULL)")
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return json.loads(zlib.decompress(row[0]).decode("utf-8"))

    def put(self, key: str, response: dict[str, Any], tokens: int) -> None:
        blob = zlib.compress(json.dumps(response, ensure_ascii=False).encode("utf-8"))
        self._db().execute("INSERT OR REPLACE INTO responses (key, response, tokens) VALUES (?, ?, ?)",
                           (key, blob, int(tokens)))

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class TokenLedger:
    """Tokens sent by one run. With a file (the stage's work folder) every task of the run and every resume
    adds to the same total; without one the total lives as long as the engine."""

    def __init__(self, path: str | os.PathLike | None, budget: int | None) -> None:
        self.path = Path(path) if path else None
        self.budget = budget
        self._local = 0
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            assert self.path is not None
            self._conn = _connect(self.path)
            self._conn.execute("CREATE TABLE IF NOT EXISTS spend (scope TEXT PRIMARY KEY, tokens INTEGER NOT NULL)")
            self._conn.execute("INSERT OR IGNORE INTO spend (scope, tokens) VALUES ('run', 0)")
        return self._conn

    def spent(self) -> int:
        if self.path is None:
            return self._local
        return int(self._db().execute("SELECT tokens FROM spend WHERE scope = 'run'").fetchone()[0])

    def add(self, tokens: int) -> None:
        if self.path is None:
            self._local += int(tokens)
        else:
            self._db().execute("UPDATE spend SET tokens = tokens + ? WHERE scope = 'run'", (int(tokens),))

    def check(self) -> None:
        """Raise before a request would be sent once the run has used its budget."""
        if self.budget is None:
            return
        spent = self.spent()
        if spent >= self.budget:
            where = f" (ledger {self.path})" if self.path else ""
            raise TokenBudgetExceeded(
                f"engine.endpoint.token_budget: this run has sent {spent} tokens, its budget is {self.budget}{where}; "
                "finished requests are cached, so raise the budget and rerun to continue where it stopped")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
