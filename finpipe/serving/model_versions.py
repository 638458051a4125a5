"""Model versions from the MLflow registry, read through finpipe's ModelRegistry and kept for
`ttl_s` seconds (a version's run metrics, which never change, are kept for good)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpipe.models.versions import PREFIX, ModelRegistry, ModelVersion
from finpipe.serving.cache import DataUnavailable

SQLITE = "sqlite:///"


def redacted(uri: str) -> str:
    """A store URI without its password."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", uri)


@dataclass(frozen=True)
class Snapshot:
    """Every registered finpipe component: its versions (newest first, as response dicts) and
    the hash of all of it, for ETags."""

    components: dict[str, list[dict[str, Any]]]
    digest: str

    def champions(self) -> dict[str, str]:
        return {
            name: version["uri"]
            for name, versions in self.components.items()
            for version in versions
            if "champion" in version["aliases"]
        }


def _date(tags: dict[str, str], name: str) -> str | None:
    value = tags.get(name)
    return value[:10] if value else None


class RegistryReader:
    """Snapshots of the registry, refreshed at most every `ttl_s` seconds."""

    def __init__(
        self, uri: str | None, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.uri = uri
        self.ttl_s = ttl_s
        self.clock = clock
        self._registry: ModelRegistry | None = None
        self._snapshot: tuple[float, Snapshot] | None = None
        self._metrics: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The current snapshot (blocking: call it from a worker thread)."""
        with self._lock:
            now = self.clock()
            if self._snapshot is None or now - self._snapshot[0] >= self.ttl_s:
                self._snapshot = (now, self._read())
            return self._snapshot[1]

    def _open(self) -> ModelRegistry:
        if self.uri is None:
            raise DataUnavailable(
                "no model registry: the data root is remote, so set MLFLOW_TRACKING_URI"
            )
        if self.uri.startswith(SQLITE) and not Path(self.uri.removeprefix(SQLITE)).is_file():
            raise DataUnavailable(
                f"no model registry at {self.uri}: materialize the `models` asset group first"
            )
        if self._registry is None:
            self._registry = ModelRegistry(self.uri)
        return self._registry

    def _read(self) -> Snapshot:
        try:
            registry = self._open()
            found = registry.client.search_registered_models(f"name LIKE '{PREFIX}%'")
            components = {}
            for model in sorted(found, key=lambda m: m.name):
                component = model.name.removeprefix(PREFIX)
                aliases: dict[str, list[str]] = {}
                for alias, version in (model.aliases or {}).items():
                    aliases.setdefault(str(version), []).append(alias)
                versions = registry.versions(component)
                components[component] = [
                    self._describe(registry, v, sorted(aliases.get(v.version, [])))
                    for v in reversed(versions)
                ]
        except DataUnavailable:
            raise
        except Exception as error:  # the store is down or unreadable
            raise DataUnavailable(
                f"the model registry at {redacted(self.uri or '')} is unreadable "
                f"({type(error).__name__}: {str(error)[:200]})"
            ) from None
        body = json.dumps(components, sort_keys=True, default=str).encode()
        return Snapshot(components, hashlib.blake2b(body, digest_size=16).hexdigest())

    def _describe(
        self, registry: ModelRegistry, version: ModelVersion, aliases: list[str]
    ) -> dict[str, Any]:
        if version.run_id not in self._metrics:
            run = registry.client.get_run(version.run_id)
            self._metrics[version.run_id] = dict(run.data.metrics)
        return {
            "component": version.component,
            "version": version.version,
            "uri": version.uri,
            "aliases": aliases,
            "trained_through": _date(dict(version.tags), "trained_through"),
            "as_of": _date(dict(version.tags), "as_of"),
            "tags": dict(version.tags),
            "metrics": self._metrics[version.run_id],
        }
