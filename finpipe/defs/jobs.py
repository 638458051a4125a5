"""Jobs: named selections of the asset graph."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest", selection=dg.AssetSelection.groups("ingest"), description="Refresh the raw data."
)

JOBS = [ingest_job]
