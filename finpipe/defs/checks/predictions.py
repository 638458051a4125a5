"""Checks on the served predictions: they are for the newest date, every served model is
recent enough, and every ticker and horizon has an ensemble row. All three block the
prediction history (and anything else downstream) when they fail."""

from collections.abc import Iterator

import dagster as dg

from finpipe.defs.assets.predictions import predictions
from finpipe.defs.resources import ForecastSettings, StorageResource
from finpipe.forecasting.checks import model_age_problems, prediction_problems

SPECS = [
    dg.AssetCheckSpec(
        "newest_date",
        asset=predictions,
        blocking=True,
        description="the predictions are for the newest feature date",
    ),
    dg.AssetCheckSpec(
        "model_age",
        asset=predictions,
        blocking=True,
        description="every served model's trained_through is at most "
        "forecasting.max_model_age trading dates before the prediction date",
    ),
    dg.AssetCheckSpec(
        "ensemble_complete",
        asset=predictions,
        blocking=True,
        description="every ticker and horizon has an ensemble prediction",
    ),
]


@dg.multi_asset_check(specs=SPECS)
def prediction_checks(
    storage: StorageResource, forecasting: ForecastSettings
) -> Iterator[dg.AssetCheckResult]:
    table = storage.store().read("predictions", "latest")
    panel = storage.read_panel()
    problems = prediction_problems(table, panel)
    problems["model_age"] = model_age_problems(table, panel.dates, forecasting.max_model_age)
    for spec in SPECS:
        found = problems[spec.name]
        yield dg.AssetCheckResult(
            check_name=spec.name,
            passed=not found,
            description="; ".join(found) or spec.description,
            metadata={"problems": dg.MetadataValue.json(found[:20])},
        )


PREDICTION_CHECKS = [prediction_checks]
