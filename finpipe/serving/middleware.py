"""ASGI middleware in front of the FastAPI routes: the URI-length limit, and the cached-read
path that answers a repeated read request without running the route again.

`CachedReads` serves a GET whose path and query string were answered before from the body
rendered then, while every file it was made from still has the same content hash, and only
for a known read key with a token in its bucket. Anything else (no key, a wrong key, an
exhausted bucket, changed or missing data, a request never answered) goes to the routes,
which validate it and answer or refuse it as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from finpipe.serving.auth import READ, KeyRing
from finpipe.serving.cache import DataUnavailable, Rendered, ResponseCache, TableCache, etag_matches
from finpipe.serving.ratelimit import RateLimiter

MAX_URI_BYTES = 2048
CACHE_CONTROL = (b"cache-control", b"no-cache")


class UriLimit:
    """Answers 414 to a path or a query string over MAX_URI_BYTES."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            for part, size in (
                ("path", len(scope["path"])),
                ("query string", len(scope["query_string"])),
            ):
                if size > MAX_URI_BYTES:
                    detail = f"{part} of {size} bytes; at most {MAX_URI_BYTES} are accepted"
                    await JSONResponse({"detail": detail}, status_code=414)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class CachedReads:
    """Serves unchanged responses to repeated read requests (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        responses: ResponseCache,
        tables: TableCache,
        keys: KeyRing,
        limiter: RateLimiter,
    ) -> None:
        self.app = app
        self.responses = responses
        self.tables = tables
        self.keys = keys
        self.limiter = limiter

    def _current(self, rendered: Rendered) -> bool:
        try:
            loaded = [self.tables.get(source).digest for source in rendered.sources]
        except DataUnavailable:
            return False
        return tuple(loaded) == rendered.digests

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            rendered = self.responses.find((scope["path"], scope["query_string"]))
            if rendered is not None and rendered.sources and self._current(rendered):
                headers = dict(scope["headers"])
                key = self.keys.find(headers.get(b"x-api-key", b"").decode("latin-1"))
                if key is not None and key.allows(READ) and not self.limiter.take(key.name):
                    self.responses.stats["hits"] += 1
                    match = headers.get(b"if-none-match", b"").decode("latin-1")
                    await self._send(send, rendered, etag_matches(match, rendered.etag))
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _send(send: Callable, rendered: Rendered, not_modified: bool) -> None:
        headers = [(b"etag", rendered.etag.encode()), CACHE_CONTROL]
        body = b"" if not_modified else rendered.body
        if not not_modified:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send(
            {
                "type": "http.response.start",
                "status": 304 if not_modified else 200,
                "headers": headers,
            }
        )
        await send({"type": "http.response.body", "body": body})
