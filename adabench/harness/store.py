"""The results store: SQLite files (standard library) in ``OUT/store/``, one per writing process.

Each process (the single process, a torchrun rank, a ``--shard``) owns one file and is its
only writer, so no two processes ever lock the same file, on a laptop or a shared file
system. A finished job is one row keyed by its spec hash, written in one transaction
once the job is complete (SQLite's journal makes the row all-or-nothing, kill -9 included).
Readers see the union of every file in the folder: when a hash has rows in several files
(a failed try in one, a later success in another), a finished row wins over a failed one,
then the newer one. :meth:`Store.merge` folds other files into this writer's file (rank 0
at the end of a torchrun, ``adabench merge``) and removes them only after the copy is
committed, so an interrupted merge loses nothing.
"""

from __future__ import annotations

import json
import math
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from adabench.harness.plan import JobSpec
from adabench.harness.runner import JobOutcome

SCHEMA_VERSION = 1
MAIN = "main"

CREATE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    hash TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    model_spec TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    init TEXT NOT NULL,
    spec TEXT NOT NULL,          -- JobSpec as JSON
    status TEXT NOT NULL,        -- ok | failed
    error TEXT,
    result TEXT,                 -- JSON (see adabench.harness.runner.run_job); NULL when failed
    describe TEXT NOT NULL,      -- the generator's describe() as JSON
    wall_s REAL NOT NULL,
    finished REAL NOT NULL,      -- unix time
    host TEXT NOT NULL,
    writer TEXT NOT NULL
);
"""
COLUMNS = ("hash", "model", "model_spec", "prompt", "seed", "init", "spec", "status", "error", "result", "describe",
           "wall_s", "finished", "host", "writer")


def strict(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN; strict parsers refuse it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


@dataclass
class Row:
    """A stored job, decoded."""

    hash: str
    model: str
    spec: dict[str, Any]
    status: str
    error: str | None
    result: dict[str, Any] | None
    describe: dict[str, Any]
    wall_s: float
    finished: float
    writer: str

    @property
    def prompt(self) -> str:
        return self.spec["prompt"]

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def init(self) -> str:
        return self.spec["init"]


def better(a: Row, b: Row) -> Row:
    """Of two rows of one hash: a finished job over a failed one, then the newer."""
    if (a.status == "ok") != (b.status == "ok"):
        return a if a.status == "ok" else b
    return a if a.finished >= b.finished else b


class Store:
    """``OUT/store/<writer>.sqlite`` for writing; every ``*.sqlite`` in the folder for reading."""

    def __init__(self, folder: str | Path, writer: str = MAIN) -> None:
        self.folder = Path(folder)
        self.writer = writer
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{writer}.sqlite"
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.executescript(CREATE)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.commit()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def put(self, job: JobSpec, outcome: JobOutcome, describe: dict[str, Any]) -> None:
        """Store one finished (or failed) job in one transaction; a rerun of the hash replaces it."""
        values = (job.hash, job.model, job.model_spec, job.prompt, job.seed, job.init,
                  json.dumps(job.to_dict(), allow_nan=False), outcome.status, outcome.error,
                  None if outcome.result is None else json.dumps(strict(outcome.result), allow_nan=False),
                  json.dumps(strict(describe), allow_nan=False), float(outcome.wall_s), time.time(),
                  socket.gethostname(), self.writer)
        db = self._connection()
        with db:                                                   # one transaction: all of the row or nothing
            db.execute(f"INSERT OR REPLACE INTO jobs ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                       values)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.sqlite"))

    @staticmethod
    def read_file(path: Path) -> list[Row]:
        """Every row of one store file (read-only; a file of another schema is refused)."""
        from adabench.errors import UserError

        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
            try:
                version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if version is None or int(version[0]) != SCHEMA_VERSION:
                    raise UserError(f"store file {path} has schema version {version and version[0]}, this adabench "
                                    f"reads {SCHEMA_VERSION}")
                rows = db.execute(f"SELECT {','.join(COLUMNS)} FROM jobs").fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"store file {path} cannot be read ({exc}); it is not an adabench results store") from None
        out = []
        for r in rows:
            d = dict(zip(COLUMNS, r))
            out.append(Row(d["hash"], d["model"], json.loads(d["spec"]), d["status"], d["error"],
                           json.loads(d["result"]) if d["result"] else None, json.loads(d["describe"]),
                           float(d["wall_s"]), float(d["finished"]), d["writer"]))
        return out

    def rows(self, hashes: Iterable[str] | None = None) -> dict[str, Row]:
        """The best row per hash over every file (only ``hashes`` when given)."""
        wanted = set(hashes) if hashes is not None else None
        best: dict[str, Row] = {}
        for path in self.files():
            for row in self.read_file(path):
                if wanted is not None and row.hash not in wanted:
                    continue
                best[row.hash] = better(best[row.hash], row) if row.hash in best else row
        return best

    def finished(self) -> set[str]:
        """Hashes of jobs that completed (failed ones are run again on resume)."""
        return {h for h, row in self.rows().items() if row.status == "ok"}

    def merge(self, sources: Iterable[Path]) -> int:
        """Fold the rows of other store files into this writer's file, then delete those files.

        Returns the number of rows copied. The copy is one transaction; a source is deleted
        only after it, so an interruption at any point loses nothing (rows are read as a union).
        """
        sources = [Path(p) for p in sources if Path(p).resolve() != self.path.resolve()]
        mine = {row.hash: row for row in self.read_file(self.path)} if self.path.exists() else {}
        chosen: dict[str, Row] = {}
        for path in sources:
            for row in self.read_file(path):
                current = chosen.get(row.hash) or mine.get(row.hash)
                if current is None or better(current, row) is row:
                    chosen[row.hash] = row
        db = self._connection()
        with db:
            for row in chosen.values():
                db.execute(f"INSERT OR REPLACE INTO jobs ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                           (row.hash, row.model, row.spec["model_spec"], row.prompt, row.seed, row.init,
                            json.dumps(row.spec), row.status, row.error,
                            None if row.result is None else json.dumps(row.result), json.dumps(row.describe),
                            row.wall_s, row.finished, socket.gethostname(), row.writer))
        for path in sources:
            if path.parent.resolve() == self.folder.resolve():
                path.unlink(missing_ok=True)
        return len(chosen)
