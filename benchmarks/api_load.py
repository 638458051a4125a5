"""Load test of the prediction service: latency and throughput of `/predictions/latest`.

Starts `finpipe serve` as a real uvicorn process on loopback (a fresh read key, a rate limit
high enough not to refuse the load) over `--data-root`, or, by default, over a temporary
root holding a synthetic latest-predictions table in the PREDICTIONS contract (`--tickers`
x horizons 1, 5, 20 x four models). One request warms the table cache; then `--clients`
threads, each with its own keep-alive connection, send `--requests` requests in all, cycling
through one query per ticker, horizon and model and the whole first page (each query is
rendered on its first request, then served from the response cache), and stop by themselves
after the requests or `--timeout` seconds. The service's cache counters (from `/health`)
before and after give the hit rates.

    python benchmarks/api_load.py results.json [--requests 2000 --clients 8 --tickers 100]

Prints p50/p99 latency, throughput and the cache hit rates, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.storage import ParquetStore
from finpipe.forecasting.predictions import write_predictions
from finpipe.serving.auth import hash_key

HOST = "127.0.0.1"
MODELS = ("ensemble", "ridge", "hist_gbm", "lstm")
HORIZONS = (1, 5, 20)


def synthetic_predictions(n_tickers: int, seed: int = 0) -> pd.DataFrame:
    """A latest-predictions table for one date in the PREDICTIONS contract."""
    rng = np.random.default_rng(seed)
    date = pd.Timestamp("2024-06-28")
    rows = pd.MultiIndex.from_product(
        [[f"T{i:04d}" for i in range(n_tickers)], HORIZONS, MODELS],
        names=["ticker", "horizon", "model"],
    ).to_frame(index=False)
    prediction = rng.normal(0, 0.01, len(rows)) * np.sqrt(rows["horizon"])
    width = 0.02 * np.sqrt(rows["horizon"])
    return rows.assign(
        date=date,
        prediction=prediction,
        lower=prediction - width,
        upper=prediction + width,
        interval_level=0.8,
        confidence=rng.uniform(0.3, 0.7, len(rows)),
        model_version=[f"models:/finpipe-{m}/1" for m in rows["model"]],
        trained_through=date - pd.Timedelta(days=10),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get(conn: http.client.HTTPConnection, path: str, key: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"X-API-Key": key})
    response = conn.getresponse()
    return response.status, response.read()


def wait_ready(port: int, key: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"finpipe serve exited with {server.returncode}")
        try:
            get(http.client.HTTPConnection(HOST, port, timeout=2), "/docs", key)
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"finpipe serve did not answer within {timeout:.0f} s")


def cache_counters(port: int, key: str) -> dict[str, int]:
    _, body = get(http.client.HTTPConnection(HOST, port, timeout=10), "/health", key)
    return json.loads(body)["cache"]


def client(
    port: int, key: str, paths: list[str], count: int, start: int, deadline: float, out: list
) -> None:
    """Send `count` requests (cycling through `paths` from `start`), recording (seconds,
    status)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    for i in range(count):
        if time.monotonic() > deadline:
            break
        began = time.perf_counter()
        status, _ = get(conn, paths[(start + i) % len(paths)], key)
        out.append((time.perf_counter() - began, status))
    conn.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--data-root", help="serve this root instead of a synthetic one")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the load")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or tmp
        if args.data_root is None:
            write_predictions(ParquetStore(tmp), synthetic_predictions(args.tickers))
        latest = ParquetStore(root).read("predictions", "latest")
        if latest is None:
            sys.exit(f"no predictions/latest.parquet under {root}")
        paths = [
            "/predictions/latest",
            *(f"/predictions/latest?ticker={t}" for t in sorted(latest["ticker"].unique())),
            *(f"/predictions/latest?horizon={h}" for h in sorted(latest["horizon"].unique())),
            *(f"/predictions/latest?model={m}" for m in sorted(latest["model"].unique())),
        ]
        key, port = "fpk_" + secrets.token_urlsafe(32), free_port()
        env = {
            **os.environ,
            "FINPIPE_API_KEYS": f"loadtest:read:{hash_key(key)}",
            "FINPIPE_API_RATE_PER_S": "1000000",
            "FINPIPE_API_BURST": "1000000",
        }
        command = [sys.executable, "-m", "finpipe.serving.cli", "serve", "--data-root", root]
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [*command, "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            wait_ready(port, key, server, timeout=60)
            warm = get(http.client.HTTPConnection(HOST, port, timeout=10), paths[0], key)
            if warm[0] != 200:
                sys.exit(f"warm-up failed: {warm}\n{log.read_text()[-2000:]}")
            before = cache_counters(port, key)
            results: list[tuple[float, int]] = []
            per_client = [args.requests // args.clients] * args.clients
            per_client[0] += args.requests - sum(per_client)
            deadline = time.monotonic() + args.timeout
            threads = [
                threading.Thread(
                    target=client, args=(port, key, paths, n, i, deadline, results), daemon=True
                )
                for i, n in enumerate(per_client)
            ]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(args.timeout + 30)
            wall = time.perf_counter() - began
            after = cache_counters(port, key)
        finally:
            server.terminate()
            server.wait(timeout=30)

    latencies = [seconds * 1000 for seconds, _ in results]
    delta = {k: after[k] - before.get(k, 0) for k in after}
    response_total = delta["response_hits"] + delta["response_misses"]
    table_total = delta["table_hits"] + delta["table_loads"] + delta["table_unchanged_reads"]
    result: dict[str, Any] = {
        "endpoint": "/predictions/latest",
        "queries": len(paths),
        "rows_in_table": len(latest),
        "requests": len(results),
        "clients": args.clients,
        "statuses": {str(k): v for k, v in Counter(s for _, s in results).items()},
        "wall_s": wall,
        "throughput_rps": len(results) / wall,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "response_cache_hit_rate": delta["response_hits"] / response_total,
        "table_cache_hit_rate": delta["table_hits"] / table_total,
        "cache_counters": delta,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    print(
        f"{result['requests']} requests, {args.clients} clients, {len(latest)} rows: "
        f"p50 {result['latency_ms']['p50']:.2f} ms, p99 {result['latency_ms']['p99']:.2f} ms, "
        f"{result['throughput_rps']:.0f} requests/s; cache hit rate: responses "
        f"{result['response_cache_hit_rate']:.1%}, tables {result['table_cache_hit_rate']:.1%}; "
        f"statuses {result['statuses']}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
