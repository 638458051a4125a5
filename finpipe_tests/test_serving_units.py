"""The prediction service's parts on their own: keys, the rate limiter, settings, the table
cache's change detection, ETags and the `finpipe keys` command."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest

from finpipe.core.storage import ParquetStore
from finpipe.serving import cli
from finpipe.serving.auth import KeyConfigError, KeyRing, create_key, hash_key, load_keys
from finpipe.serving.cache import DataUnavailable, Source, TableCache, etag_matches, make_etag
from finpipe.serving.model_versions import redacted
from finpipe.serving.ratelimit import RateLimiter, retry_after
from finpipe.serving.settings import Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_created_keys_are_found_by_their_hash_only() -> None:
    secret, entry = create_key("dashboard", "read")
    assert secret not in entry and entry == f"dashboard:read:{hash_key(secret)}"
    ring = KeyRing(load_keys(keys=f"{entry}, {create_key('ops', 'admin')[1]}"))
    found = ring.find(secret)
    assert found is not None and found.name == "dashboard" and found.allows("read")
    assert not found.allows("admin")
    assert ring.find(secret[:-1]) is None and ring.find("") is None


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ("dashboard:read", "is not name:scope:sha256hex"),
        (f"dashboard:write:{'0' * 64}", "scope 'write' is not one of"),
        ("dashboard:read:abc", "64 lower-case hex digits"),
        (f"Dash/board:read:{'0' * 64}", "invalid name"),
        (f"a:read:{'0' * 64},a:admin:{'1' * 64}", "duplicate key names: ['a']"),
    ],
)
def test_bad_key_entries_are_refused_with_the_reason(entries: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        load_keys(keys=entries)


def test_key_files_take_comments_and_must_exist(tmp_path) -> None:
    entry = create_key("reader", "read")[1]
    path = tmp_path / "keys"
    path.write_text(f"# keys\n\n{entry}  # the dashboard\n")
    assert [k.name for k in load_keys(str(path))] == ["reader"]
    with pytest.raises(KeyConfigError, match="is not a file"):
        load_keys(str(tmp_path / "missing"))


def test_a_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # every key has its own bucket
    clock.now = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") == pytest.approx(0.5)
    clock.now = 100.0
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refills to the burst, no further
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def test_settings_read_the_environment_and_name_a_bad_variable() -> None:
    settings = Settings.from_env(
        {"FINPIPE_DATA_ROOT": "s3://bucket/finpipe", "FINPIPE_API_RATE_PER_S": "2.5"}, port=9000
    )
    assert settings.rate_per_s == 2.5 and settings.port == 9000 and settings.host == "127.0.0.1"
    assert settings.registry_uri() is None  # a remote root needs MLFLOW_TRACKING_URI
    local = Settings.from_env({"FINPIPE_DATA_ROOT": "/srv/finpipe"})
    assert local.registry_uri() == "sqlite:////srv/finpipe/mlflow/mlflow.db"
    with pytest.raises(SettingsError, match="FINPIPE_API_BURST='many' is not an integer"):
        Settings.from_env({"FINPIPE_API_BURST": "many"})
    with pytest.raises(SettingsError, match="FINPIPE_API_RATE_PER_S must be positive"):
        Settings.from_env({"FINPIPE_API_RATE_PER_S": "0"})


def test_the_cache_reloads_a_file_only_when_it_changes(tmp_path) -> None:
    store, clock = ParquetStore(str(tmp_path)), Clock()
    cache = TableCache(store, check_s=1.0, clock=clock)
    parsed = []
    source = Source(("t",), "the `t` asset", lambda f: parsed.append(len(f)) or f)
    with pytest.raises(DataUnavailable, match=r"^t.parquet is missing: materialize the `t` asset"):
        cache.get(source)
    store.write(pd.DataFrame({"x": [1, 2]}), "t")
    first = cache.get(source)
    store.write(pd.DataFrame({"x": [1, 2, 3]}), "t")
    assert cache.get(source).digest == first.digest  # not checked again within check_s
    clock.now = 1.0
    second = cache.get(source)
    assert second.digest != first.digest and len(second.value) == 3
    os.utime(store.path("t"), (1e9, 1e9))  # touched: read and hashed, not parsed again
    clock.now = 2.0
    assert cache.get(source).digest == second.digest
    assert parsed == [2, 3]
    assert cache.stats == {"hits": 1, "loads": 2, "unchanged_reads": 1}


def test_etags_follow_the_parameters_and_the_data() -> None:
    tag = make_etag("/p", {"a": 1, "b": None}, ["d1"])
    assert tag == make_etag("/p", {"a": 1}, ["d1"]) != make_etag("/p", {"a": 2}, ["d1"])
    assert tag != make_etag("/p", {"a": 1}, ["d2"])
    assert etag_matches(f'"x", W/{tag}', tag) and etag_matches("*", tag)
    assert not etag_matches(None, tag) and not etag_matches('"x"', tag)


def test_store_uris_are_shown_without_passwords() -> None:
    assert redacted("postgresql+psycopg2://finpipe:secret@db:5432/mlflow") == (
        "postgresql+psycopg2://finpipe:***@db:5432/mlflow"
    )


def test_keys_create_prints_the_key_once_and_the_entry_to_store(capsys) -> None:
    assert cli.main(["keys", "create", "dashboard", "--scope", "admin"]) == 0
    out = capsys.readouterr().out
    secret = re.search(r"key .*: (fpk_\S+)", out).group(1)
    entry = re.search(r"entry .*: (\S+)", out).group(1)
    assert KeyRing(load_keys(keys=entry)).find(secret).scope == "admin"
    assert cli.main(["keys", "create", "Bad Name"]) == 2
    assert "invalid name 'Bad Name'" in capsys.readouterr().err
