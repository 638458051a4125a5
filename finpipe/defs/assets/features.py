"""Group `features`: engineered features and forward-return labels, kept in separate assets
so that the one place that reads the future is auditable."""

import dagster as dg
import pandas as pd

from finpipe.core.contracts import MACRO, PRICES
from finpipe.data.ingest import read_table
from finpipe.defs.assets.ingest import benchmark_prices, raw_macro, raw_prices, universe
from finpipe.defs.resources import ResearchSettings, StorageResource
from finpipe.features import FeatureConfig, build_features, fit_garch
from finpipe.features.labels import forward_returns

GROUP = "features"


def nan_share_by_family(frame: pd.DataFrame, columns: dict[str, list[str]]) -> dict[str, float]:
    """Mean share of missing values of each family's columns (warm-up periods included)."""
    return {
        family: round(float(frame[cols].isna().mean().mean()), 4)
        for family, cols in columns.items()
    }


@dg.asset(
    group_name=GROUP, deps=[raw_prices, benchmark_prices, raw_macro, universe], kinds={"parquet"}
)
def features(
    context: dg.AssetExecutionContext, storage: StorageResource, research: ResearchSettings
) -> dg.MaterializeResult:
    """Every feature family the source's fields allow, per (date, ticker), point in time."""
    store = storage.store()
    prices = read_table(store, "prices", PRICES)
    benchmark = read_table(store, "benchmark", PRICES)
    macro = read_table(store, "macro", MACRO)
    train_end = research.train_end_date(prices["date"])
    context.log.info("features: fitting GARCH(1,1) on returns up to %s", train_end.date())
    garch = fit_garch(prices, train_end)
    config = FeatureConfig(families=tuple(research.feature_families) or None, garch=garch)
    context.log.info("features: %d price rows, %d tickers", len(prices), prices["ticker"].nunique())
    result = build_features(
        prices,
        benchmark=benchmark if not benchmark.empty else None,
        macro=macro if not macro.empty else None,
        universe=store.read("reference", "universe"),
        config=config,
    )
    for family, seconds in result.seconds.items():
        context.log.info("features: %-28s %.2f s", family, seconds)
    for family, reason in result.skipped.items():
        context.log.info("features: skipped %s (%s)", family, reason)
    path = store.write(result.frame, "features", "features")
    frame = result.frame
    return dg.MaterializeResult(
        metadata={
            "families_computed": dg.MetadataValue.json(result.computed),
            "families_skipped": dg.MetadataValue.json(result.skipped),
            "feature_count": dg.MetadataValue.int(frame.shape[1] - 2),
            "nan_share_by_family": dg.MetadataValue.json(
                nan_share_by_family(frame, result.columns)
            ),
            "first_date": dg.MetadataValue.text(str(frame["date"].min().date())),
            "last_date": dg.MetadataValue.text(str(frame["date"].max().date())),
            "garch_train_end": dg.MetadataValue.text(str(train_end.date())),
            "seconds_by_family": dg.MetadataValue.json(
                {k: round(v, 3) for k, v in result.seconds.items()}
            ),
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(group_name=GROUP, deps=[raw_prices], kinds={"parquet"})
def labels(
    context: dg.AssetExecutionContext, storage: StorageResource, research: ResearchSettings
) -> dg.MaterializeResult:
    """Forward log returns per horizon with `label_end`; the only asset that reads the future."""
    store = storage.store()
    prices = read_table(store, "prices", PRICES)
    frame = forward_returns(prices, tuple(research.horizons), research.execution_lag)
    path = store.write(frame, "features", "labels")
    context.log.info("labels: %d rows for horizons %s", len(frame), list(research.horizons))
    counts = frame.groupby("horizon").size()
    return dg.MaterializeResult(
        metadata={
            "horizons": dg.MetadataValue.json([int(h) for h in research.horizons]),
            "execution_lag": dg.MetadataValue.int(research.execution_lag),
            "rows_per_horizon": dg.MetadataValue.json({int(k): int(v) for k, v in counts.items()}),
            "last_label_end": dg.MetadataValue.text(str(frame["label_end"].max().date())),
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "path": dg.MetadataValue.path(path),
        }
    )


FEATURE_ASSETS = [features, labels]
