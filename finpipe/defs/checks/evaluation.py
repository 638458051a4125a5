"""The leak gate on the replay: skill beyond what daily equity data allows blocks everything
downstream (the serving ensemble, the report) instead of being published."""

import dagster as dg

from finpipe.data.ingest import universe_prices
from finpipe.defs.assets.evaluation import read_replay, walk_forward_predictions
from finpipe.defs.resources import EvaluationSettings, StorageResource
from finpipe.evaluation.leak_gate import implausible_skill


@dg.asset_check(asset=walk_forward_predictions, blocking=True)
def plausible_skill(
    storage: StorageResource, evaluation: EvaluationSettings
) -> dg.AssetCheckResult:
    """The test period's mean daily rank IC of every model and horizon stays at or below
    `evaluation.max_rank_ic`, and the ensemble's long-short Sharpe ratio at or below
    `evaluation.max_sharpe`: a result above either is a leak until proven otherwise."""
    store = storage.store()
    plan = storage.read_plan()
    rows = read_replay(storage)
    found = implausible_skill(
        rows[rows["date"] >= plan.test_start],
        store.read("features", "labels"),
        universe_prices(store),
        evaluation.max_rank_ic,
        evaluation.max_sharpe,
        evaluation.top_k,
    )
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(found) or "test-period skill within what daily equity data allows",
        metadata={
            "max_rank_ic": dg.MetadataValue.float(evaluation.max_rank_ic),
            "max_sharpe": dg.MetadataValue.float(evaluation.max_sharpe),
            "violations": dg.MetadataValue.json(found),
        },
    )


EVALUATION_CHECKS = [plausible_skill]
