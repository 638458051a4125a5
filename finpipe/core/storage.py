"""The one place that knows the storage layout: Parquet tables under a local path or fsspec URL.

Layout under `root`:

    raw/prices/<TICKER>.parquet          raw/benchmark/<TICKER>.parquet
    raw/macro/<SERIES_ID>.parquet        raw/fundamentals/<TICKER>.parquet
    quarantine/<dataset>.parquet         (rows a quality rule rejected, with the rule)
    reference/universe.parquet           features/features.parquet, features/labels.parquet
    plan/time_plan.json                  plan/research_end.json (the fixed research boundary)
    panel/                               (the dense model panel: .npy arrays, panel.json)
    mlflow/                              (the local MLflow store: mlflow.db, artifacts/)
    predictions/latest.parquet           predictions/history/date=YYYY-MM-DD.parquet
    evaluation/folds/<fold>.parquet      evaluation/replay.parquet (the walk-forward replay)
    portfolio/<table>.parquet            portfolio/summary.json (targets, risk, orders, replay)

Every write goes to a temporary file beside its target and is then renamed over it, so a
crash mid-write leaves the previous version intact: `atomic_file` (and `atomic_write_bytes`)
for files and `staged_folder` for folders are the one way finpipe writes anything (tables, models,
checkpoints, reports), locally or through fsspec.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from finpipe.core.identifiers import validate_series_id, validate_ticker

RAW_DATASETS = {
    "prices": validate_ticker,
    "benchmark": validate_ticker,
    "fundamentals": validate_ticker,
    "macro": validate_series_id,
}


METADATA_PREFIX = "finpipe."
LOCAL = LocalFileSystem()

# Tables this process has read in full, by `table_name`: how a run shows which steps re-read
# a large table (the Dagster storage resource logs it per run).
TABLE_READS: Counter[str] = Counter()

# Which asset writes each top-level folder of the layout (and so what rewrites a file that
# no longer reads), most specific first.
PRODUCERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("raw",), "ingest moves it to quarantine/corrupt/ and refetches it on the next refresh"),
    (("reference",), "re-materialize universe"),
    (("features", "labels"), "re-materialize labels"),
    (("features",), "re-materialize features"),
    (("plan",), "re-materialize time_plan"),
    (("predictions", "history"), "re-materialize that date's prediction_history partition"),
    (("predictions",), "re-materialize predictions"),
    (("evaluation",), "re-materialize walk_forward_predictions"),
    (("models", "tuned_params"), "re-materialize tuned_params_table"),
    (("research",), "re-materialize research_decisions"),
    (("monitoring",), "re-materialize drift_report"),
    (("portfolio",), "re-materialize the portfolio group"),
    (("quarantine",), "move it away: quarantined rows are kept for inspection only"),
)


class UnreadableFileError(ValueError):
    """A stored file that exists but does not read (truncated, overwritten, not Parquet);
    the message names the file and what rewrites it."""


def repair_hint(parts: tuple[str, ...]) -> str:
    """What rewrites the stored file at `parts` (see PRODUCERS)."""
    return next(
        (fix for prefix, fix in PRODUCERS if parts[: len(prefix)] == prefix),
        "re-materialize the asset that writes it",
    )


def table_name(parts: tuple[str, ...]) -> str:
    """A table's name for `TABLE_READS`: `features/features`; the tables of a folder of many
    (raw per ticker, replay folds, history dates) count together as `raw/prices/*`."""
    return "/".join(parts) if len(parts) <= 2 else "/".join(parts[:2]) + "/*"


def _beside(path: str, suffix: str) -> str:
    """A hidden name next to `path` (readers of the folder skip dot files)."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.{suffix}")


@contextmanager
def atomic_file(
    path: str | os.PathLike[str], fs: fsspec.AbstractFileSystem = LOCAL
) -> Iterator[IO[bytes]]:
    """A binary file handle that writes `path` on `fs` (default: the local disk) through a
    temporary file beside it, renamed over `path` when the block ends without an error
    (otherwise the temporary file is removed and `path` is left as it was)."""
    path = str(path)
    fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    tmp = _beside(path, "tmp")
    try:
        with fs.open(tmp, "wb") as fh:
            yield fh
            if fs is LOCAL:
                fh.flush()
                os.fsync(fh.fileno())
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, fs: fsspec.AbstractFileSystem = LOCAL
) -> str:
    """Write `data` to `path` on `fs` atomically (`atomic_file`); returns the path."""
    with atomic_file(path, fs) as fh:
        fh.write(data)
    return str(path)


@contextmanager
def staged_folder(
    target: str | os.PathLike[str], fs: fsspec.AbstractFileSystem = LOCAL
) -> Iterator[str]:
    """Yield a staging path beside the folder `target` (not created); when the block ends
    without an error the staged folder replaces `target` (the old one is moved aside first
    and removed after), otherwise it is discarded and `target` is left as it was."""
    target = str(target).rstrip("/")
    fs.makedirs(posixpath.dirname(target) or ".", exist_ok=True)
    staging, old = _beside(target, "tmp"), _beside(target, "old")
    try:
        yield staging
        if fs.exists(target):
            fs.mv(target, old, recursive=True)
        fs.mv(staging, target, recursive=True)
    finally:
        for leftover in (staging, old):
            if fs.exists(leftover):
                fs.rm(leftover, recursive=True)


def parquet_table(frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> pa.Table:
    """A frame as an Arrow table (no pandas index), `metadata` in its schema metadata under
    `finpipe.<key>`."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        extra = {f"{METADATA_PREFIX}{k}".encode(): str(v).encode() for k, v in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    return table


def parquet_bytes(frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise a frame to compressed Parquet bytes (zstd, no pandas index); `metadata` as
    in `parquet_table`."""
    buf = io.BytesIO()
    pq.write_table(parquet_table(frame, metadata), buf, compression="zstd")
    return buf.getvalue()


class ParquetStore:
    """Atomic Parquet reads and writes under a root that may be a local path or fsspec URL."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.fs, self._base = fsspec.core.url_to_fs(self.root)

    def __repr__(self) -> str:
        return f"ParquetStore({self.root!r})"

    def path(self, *parts: str, suffix: str = ".parquet") -> str:
        """Filesystem path of a table, e.g. path("raw", "prices", "AAPL")."""
        for part in parts:
            if not part or "/" in part or part in {".", ".."}:
                raise ValueError(f"invalid storage path component {part!r}")
        return posixpath.join(self._base, *parts[:-1], parts[-1] + suffix)

    def raw_key(self, dataset: str, name: str) -> tuple[str, str, str]:
        """Key of a raw table; validates the ticker or series id that names the file."""
        if dataset not in RAW_DATASETS:
            raise ValueError(
                f"unknown raw dataset {dataset!r}; expected one of {list(RAW_DATASETS)}"
            )
        return ("raw", dataset, RAW_DATASETS[dataset](name))

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def unreadable(
        self, parts: tuple[str, ...], path: str, error: Exception
    ) -> UnreadableFileError:
        """The error for a stored file that does not read, naming it and the fix."""
        return UnreadableFileError(
            f"{path} is unreadable ({type(error).__name__}: {error}); {repair_hint(parts)}"
        )

    def read(self, *parts: str) -> pd.DataFrame | None:
        """Read a table, or None when it has never been written; UnreadableFileError when it
        exists but does not read."""
        path = self.path(*parts)
        if not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb") as fh:
                frame = pq.read_table(fh).to_pandas()
        except (pa.ArrowException, OSError) as error:
            raise self.unreadable(parts, path, error) from error
        TABLE_READS[table_name(parts)] += 1
        return frame

    def read_metadata(self, *parts: str) -> dict[str, str]:
        """The `finpipe.*` schema metadata written with a table (empty when absent)."""
        path = self.path(*parts)
        if not self.fs.exists(path):
            return {}
        try:
            with self.fs.open(path, "rb") as fh:
                raw = pq.read_schema(fh).metadata or {}
        except (pa.ArrowException, OSError) as error:
            raise self.unreadable(parts, path, error) from error
        return {
            k.decode()[len(METADATA_PREFIX) :]: v.decode()
            for k, v in raw.items()
            if k.decode().startswith(METADATA_PREFIX)
        }

    def write(
        self, frame: pd.DataFrame, *parts: str, metadata: dict[str, str] | None = None
    ) -> str:
        """Write a table atomically (temp file, then rename), streamed to the file rather than
        built in memory first; returns its path."""
        path = self.path(*parts)
        table = parquet_table(frame, metadata)
        with atomic_file(path, self.fs) as fh:
            pq.write_table(table, fh, compression="zstd")
        return path

    def write_json(self, value: Any, *parts: str) -> str:
        """Write a JSON document (e.g. the time plan) atomically; returns its path."""
        data = json.dumps(value, indent=1, sort_keys=True).encode()
        return atomic_write_bytes(self.path(*parts, suffix=".json"), data, self.fs)

    def read_json(self, *parts: str) -> Any | None:
        """A JSON document, or None when it has never been written."""
        path = self.path(*parts, suffix=".json")
        if not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb") as fh:
                return json.loads(fh.read())
        except (ValueError, OSError) as error:
            raise self.unreadable(parts, path, error) from error

    def move_aside(self, parts: tuple[str, ...], folder: tuple[str, ...]) -> str:
        """Move a stored table into `folder` under a timestamped name (nothing is deleted);
        returns where it went."""
        stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
        target = self.path(*folder, f"{parts[-1]}-{stamp}")
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.mv(self.path(*parts), target)
        return target

    def put_folder(self, local: str | os.PathLike[str], *parts: str) -> str:
        """Copy a local folder (e.g. a saved model) to `<root>/<parts>`, replacing what was
        there only once the copy is complete."""
        target = posixpath.join(self._base, *parts)
        with staged_folder(target, self.fs) as staging:
            self.fs.put(str(local).rstrip("/") + "/", staging, recursive=True)
        return target

    def get_folder(self, local: str | os.PathLike[str], *parts: str) -> bool:
        """Copy `<root>/<parts>` into a local folder; False when it does not exist."""
        source = posixpath.join(self._base, *parts)
        if not self.fs.exists(source):
            return False
        self.fs.get(source.rstrip("/") + "/", str(local).rstrip("/") + "/", recursive=True)
        return True

    def names(self, *parts: str) -> list[str]:
        """Names of the tables in a folder (file stems), sorted."""
        folder = posixpath.join(self._base, *parts)
        if not self.fs.exists(folder):
            return []
        return sorted(
            posixpath.basename(p)[: -len(".parquet")]
            for p in self.fs.ls(folder, detail=False)
            if p.endswith(".parquet")
        )

    def read_all(self, *parts: str) -> pd.DataFrame | None:
        """Concatenate every table in a folder, or None when the folder is empty."""
        frames = [self.read(*parts, name) for name in self.names(*parts)]
        frames = [f for f in frames if f is not None]
        return pd.concat(frames, ignore_index=True) if frames else None
