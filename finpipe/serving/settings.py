"""The service's settings, read from the environment (`finpipe serve` flags override the
address and the data root); README's deployment section has the table of variables.

The data root is the pipeline's (FINPIPE_DATA_ROOT: a path or an fsspec URL); keys come from
FINPIPE_API_KEYS_FILE and FINPIPE_API_KEYS; each key's token bucket refills at
FINPIPE_API_RATE_PER_S up to FINPIPE_API_BURST; `/health` is unhealthy when the newest
predictions are more than FINPIPE_API_MAX_AGE_DAYS trading days old; cached files are checked
for changes every FINPIPE_API_RELOAD_CHECK_S seconds and model versions re-read from MLflow
(MLFLOW_TRACKING_URI, else SQLite under a local data root) every FINPIPE_API_REGISTRY_TTL_S;
run requests go to the Dagster webserver at FINPIPE_DAGSTER_URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV = {
    "host": "FINPIPE_API_HOST",
    "port": "FINPIPE_API_PORT",
    "data_root": "FINPIPE_DATA_ROOT",
    "keys_file": "FINPIPE_API_KEYS_FILE",
    "keys": "FINPIPE_API_KEYS",
    "rate_per_s": "FINPIPE_API_RATE_PER_S",
    "burst": "FINPIPE_API_BURST",
    "max_age_days": "FINPIPE_API_MAX_AGE_DAYS",
    "reload_check_s": "FINPIPE_API_RELOAD_CHECK_S",
    "registry_ttl_s": "FINPIPE_API_REGISTRY_TTL_S",
    "dagster_url": "FINPIPE_DAGSTER_URL",
    "tracking_uri": "MLFLOW_TRACKING_URI",
}


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads (see the module docstring for the variables)."""

    data_root: str
    host: str = "127.0.0.1"
    port: int = 8000
    keys_file: str = ""
    keys: str = ""
    rate_per_s: float = 10.0
    burst: int = 20
    max_age_days: int = 1
    reload_check_s: float = 1.0
    registry_ttl_s: float = 30.0
    dagster_url: str = ""
    tracking_uri: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `env` (default: os.environ), then `overrides` that are not None."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"data_root": str(Path.cwd() / "data")}
        types = {f.name: f.type for f in fields(cls)}
        for name, variable in ENV.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            kind = {"int": int, "float": float}.get(str(types[name]), str)
            try:
                values[name] = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise SettingsError(f"{variable}={raw!r} is not {what}") from None
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    def __post_init__(self) -> None:
        positive = {
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "port": self.port,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{ENV[name]} must be positive, got {value}")
        for name in ("max_age_days", "reload_check_s", "registry_ttl_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV[name]} must be >= 0, got {getattr(self, name)}")

    def registry_uri(self) -> str | None:
        """MLflow's store: MLFLOW_TRACKING_URI, else the SQLite file the pipeline writes under a
        local data root (None for a remote root without MLFLOW_TRACKING_URI)."""
        if self.tracking_uri:
            return self.tracking_uri
        if "://" in self.data_root:
            return None
        return f"sqlite:///{Path(self.data_root).resolve() / 'mlflow' / 'mlflow.db'}"
