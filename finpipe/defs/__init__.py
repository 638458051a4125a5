"""The Dagster layer: thin wiring of assets, checks, resources and jobs over domain code."""
