"""Checks on the stored features: no infinities and no feature that is missing everywhere."""

import dagster as dg
import numpy as np

from finpipe.defs.assets.features import features
from finpipe.defs.resources import StorageResource


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("no_infinities", asset=features, blocking=True),
        dg.AssetCheckSpec("no_all_nan_feature", asset=features, blocking=True),
    ]
)
def feature_checks(storage: StorageResource):
    frame = storage.store().read("features", "features")
    values = frame.drop(columns=["date", "ticker"])
    infinite = values.columns[np.isinf(values.to_numpy(dtype=np.float64)).any(axis=0)].tolist()
    yield dg.AssetCheckResult(
        check_name="no_infinities",
        passed=not infinite,
        description=f"{len(infinite)} features hold +/-inf",
        metadata={"features": dg.MetadataValue.json(infinite[:50])},
    )
    all_nan = values.columns[values.isna().all(axis=0)].tolist()
    yield dg.AssetCheckResult(
        check_name="no_all_nan_feature",
        passed=not all_nan,
        description=f"{len(all_nan)} features are missing on every row",
        metadata={"features": dg.MetadataValue.json(all_nan[:50])},
    )


FEATURE_CHECKS = [feature_checks]
