"""Checks on the features: no infinities and no feature that is missing everywhere. The
features asset evaluates them on the frame it writes, so the table is not read back."""

import dagster as dg
import pandas as pd

from finpipe.features.engine import ALL_MISSING, INFINITE, invalid_columns

CHECKS = {"no_infinities": INFINITE, "no_all_nan_feature": ALL_MISSING}
FEATURE_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=dg.AssetKey("features"), blocking=True) for name in CHECKS
]


def feature_check_results(frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """The result of every feature check on `frame` (what the features asset writes)."""
    found = invalid_columns(frame)
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=not found[problem],
            description=f"{len(found[problem])} features {problem}",
            metadata={"features": dg.MetadataValue.json(found[problem][:50])},
        )
        for name, problem in CHECKS.items()
    ]
