"""Serving stage: the read-only HTTP API over the served forecasts (`finpipe serve`), with API
keys, per-key rate limits, an in-memory table cache, and run requests to Dagster's webserver."""
