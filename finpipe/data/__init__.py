"""Data stage: sources (bundled, live, synthetic), incremental ingest, quality rules, universe."""
