"""Parsed tables kept in memory, reloaded only when their file changes; rendered responses
kept by ETag.

`TableCache.get` looks at a file's modification time, size and inode (or, on object stores,
their ETag and generation) at most every `check_s` seconds. When those change it reads the
bytes and hashes them: unchanged content (a touched file) keeps the parsed value; new
content is parsed and checked again. The content hash is what ETags are made of, so a
response changes its ETag exactly when the data behind it does. A missing or unreadable file
raises DataUnavailable, which names the file and what writes it; an unreadable file is not
read again until it changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from finpipe.core.storage import ParquetStore

# What fsspec's `info` reports that changes when a file is replaced, across filesystems.
SIGNATURE_FIELDS = ("size", "mtime", "ino", "LastModified", "ETag", "updated", "generation")


class DataUnavailable(Exception):
    """A file behind an endpoint is missing or unreadable; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """A file the service reads: where it is under the root, what writes it, and `prepare`,
    which checks the parsed table (or JSON document) and returns what endpoints use; it raises
    ValueError naming what is wrong."""

    parts: tuple[str, ...]
    producer: str
    prepare: Callable[[Any], Any]
    suffix: str = ".parquet"

    @property
    def name(self) -> str:
        return "/".join(self.parts) + self.suffix


@dataclass(frozen=True)
class Loaded:
    """A prepared value and the hash of the bytes it came from."""

    value: Any
    digest: str


@dataclass
class _Entry:
    signature: tuple
    checked: float
    digest: str = ""
    value: Any = None
    error: str | None = None


def _missing(source: Source) -> DataUnavailable:
    return DataUnavailable(f"{source.name} is missing: materialize {source.producer}")


class TableCache:
    """Prepared tables by file, under the store's root."""

    def __init__(
        self, store: ParquetStore, check_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.check_s = check_s
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._listings: dict[tuple[str, ...], tuple[float, list[str]]] = {}
        self._derived: dict[Hashable, tuple[tuple[str, ...], Any]] = {}
        # hits: served from memory; loads: parsed; unchanged_reads: read, same content.
        self.stats = {"hits": 0, "loads": 0, "unchanged_reads": 0}

    def get(self, source: Source) -> Loaded:
        """The prepared value of `source`, reloaded only when its file changed."""
        path = self.store.path(*source.parts, suffix=source.suffix)
        now = self.clock()
        entry = self._entries.get(path)
        if entry is not None and now - entry.checked < self.check_s:
            return self._serve(entry)
        try:
            info = self.store.fs.info(path)
        except FileNotFoundError:
            self._entries.pop(path, None)
            raise _missing(source) from None
        signature = tuple(str(info.get(k)) for k in SIGNATURE_FIELDS)
        if entry is not None and entry.signature == signature:
            entry.checked = now
            return self._serve(entry)
        self._entries[path] = self._load(path, source, signature, now, entry)
        return self._serve(self._entries[path], hit=False)

    def _serve(self, entry: _Entry, hit: bool = True) -> Loaded:
        if entry.error is not None:
            raise DataUnavailable(entry.error)
        self.stats["hits"] += hit
        return Loaded(entry.value, entry.digest)

    def _load(
        self, path: str, source: Source, signature: tuple, now: float, old: _Entry | None
    ) -> _Entry:
        try:
            with self.store.fs.open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise _missing(source) from None
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        if old is not None and old.digest == digest:
            self.stats["unchanged_reads"] += 1
            return _Entry(signature, now, digest, old.value, old.error)
        self.stats["loads"] += 1
        try:
            parsed = (
                json.loads(data)
                if source.suffix == ".json"
                else pq.read_table(io.BytesIO(data)).to_pandas()
            )
        except Exception as error:  # any parse failure: the file is not a readable table
            message = f"{type(error).__name__}: {str(error)[:200]}"
            return _Entry(signature, now, digest, error=self._unreadable(source, message))
        try:
            value = source.prepare(parsed)
        except (ValueError, KeyError, TypeError) as error:
            return _Entry(signature, now, digest, error=self._unreadable(source, str(error)))
        return _Entry(signature, now, digest, value)

    @staticmethod
    def _unreadable(source: Source, why: str) -> str:
        return f"{source.name} is unreadable ({why}); re-materialize {source.producer}"

    def names(self, *parts: str) -> list[str]:
        """The table names in a folder (as ParquetStore.names), listed at most every
        `check_s` seconds."""
        now = self.clock()
        listed = self._listings.get(parts)
        if listed is None or now - listed[0] >= self.check_s:
            listed = (now, self.store.names(*parts))
            self._listings[parts] = listed
        return listed[1]

    def derive(self, key: Hashable, inputs: list[Loaded], build: Callable[[], Any]) -> Loaded:
        """A value built from several loaded inputs, rebuilt only when one of them changed."""
        digests = tuple(i.digest for i in inputs)
        found = self._derived.get(key)
        if found is None or found[0] != digests:
            found = (digests, build())
            self._derived[key] = found
        digest = hashlib.blake2b("|".join(digests).encode(), digest_size=16).hexdigest()
        return Loaded(found[1], digest)


def make_etag(path: str, params: dict[str, Any], digests: list[str]) -> str:
    """A strong ETag for a response: the route, its validated parameters and the content
    hashes of the data it reads."""
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k] is not None)
    key = posixpath.normpath(path) + "?" + query + "|" + "|".join(digests)
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (or is `*`)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class Rendered:
    """A rendered response body, its ETag, and the files it was made from (with their content
    hashes) when it may be served again while they are unchanged without re-validating the
    request (see `finpipe.serving.middleware.CachedReads`)."""

    etag: str
    body: bytes
    sources: tuple[Source, ...] = ()
    digests: tuple[str, ...] = ()


class ResponseCache:
    """Rendered responses by request (path and query string), the `max_entries` most recently
    used."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bytes], Rendered] = OrderedDict()
        self.stats = {"hits": 0, "misses": 0}

    def find(self, request: tuple[str, bytes]) -> Rendered | None:
        found = self._entries.get(request)
        if found is not None:
            self._entries.move_to_end(request)
        return found

    def get(
        self,
        request: tuple[str, bytes],
        etag: str,
        render: Callable[[], bytes],
        sources: tuple[Source, ...] = (),
        digests: tuple[str, ...] = (),
    ) -> Rendered:
        """The cached response for `request` if it has this ETag, else `render()`'s."""
        found = self.find(request)
        if found is not None and found.etag == etag:
            self.stats["hits"] += 1
            return found
        self.stats["misses"] += 1
        rendered = Rendered(etag, render(), sources, digests)
        self._entries[request] = rendered
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return rendered
