"""Checks on the stored features: no infinities and no feature that is missing everywhere."""

import dagster as dg

from finpipe.defs.assets.features import features
from finpipe.defs.resources import StorageResource
from finpipe.features.engine import ALL_MISSING, INFINITE, invalid_columns

CHECKS = {"no_infinities": INFINITE, "no_all_nan_feature": ALL_MISSING}


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=features, blocking=True) for name in CHECKS]
)
def feature_checks(storage: StorageResource):
    found = invalid_columns(storage.store().read("features", "features"))
    for name, problem in CHECKS.items():
        columns = found[problem]
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not columns,
            description=f"{len(columns)} features {problem}",
            metadata={"features": dg.MetadataValue.json(columns[:50])},
        )


FEATURE_CHECKS = [feature_checks]
