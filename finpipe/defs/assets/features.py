"""Group `features`: the time plan, engineered features, forward-return labels (kept in a
separate asset so that the one place that reads the future is auditable) and the dense model
panel every later step memory-maps instead of re-reading the tables."""

import time

import dagster as dg

from finpipe.core.contracts import FUNDAMENTALS, LABELS, MACRO, PRICES
from finpipe.core.time_plan import build_time_plan, research_boundary
from finpipe.data.ingest import read_table, universe_prices, universe_tickers
from finpipe.defs.assets.ingest import (
    benchmark_prices,
    raw_fundamentals,
    raw_macro,
    raw_prices,
    universe,
)
from finpipe.defs.checks.features import FEATURE_CHECK_SPECS, feature_check_results
from finpipe.defs.metadata import contract_schema, frame_schema
from finpipe.defs.resources import (
    PLAN_PATH,
    MarketDataResource,
    ResearchSettings,
    StorageResource,
)
from finpipe.features import FeatureConfig, build_features, fit_garch
from finpipe.features.engine import nan_share_by_family
from finpipe.features.labels import forward_returns
from finpipe.models.panel_data import PanelData

GROUP = "features"
RESEARCH_END_PATH = ("plan", "research_end")


@dg.asset(group_name=GROUP, deps=[raw_prices], kinds={"json"}, code_version="1")
def time_plan(
    context: dg.AssetExecutionContext, storage: StorageResource, research: ResearchSettings
) -> dg.MaterializeResult:
    """Which dates every fit learns from: the replay's retrain dates and the serving fit at
    the newest date, under one rule (`finpipe.core.time_plan`); the research boundary is
    fixed once recorded."""
    store = storage.store()
    dates = universe_prices(store)["date"].unique()
    recorded = store.read_json(*RESEARCH_END_PATH)
    research_end, source = research_boundary(
        dates,
        research.research_end,
        recorded["research_end"] if recorded else None,
        research.research_fraction,
    )
    if recorded is None and not research.research_end:
        store.write_json({"research_end": str(research_end.date())}, *RESEARCH_END_PATH)
    plan = build_time_plan(dates, research.plan_settings(), research_end)
    path = store.write_json(plan.to_dict(), *PLAN_PATH)
    serving = plan.serving
    context.log.info(
        "time plan as of %s: research ends %s (%s), %d replay folds from %s, serving fits on "
        "%s..%s and early-stops on %s..%s",
        plan.as_of.date(),
        research_end.date(),
        source,
        len(plan.folds),
        plan.folds[0].as_of.date(),
        serving.train_start.date(),
        serving.fit_end.date(),
        serving.valid_start.date(),
        serving.valid_end.date(),
    )
    return dg.MaterializeResult(
        metadata={
            "as_of": dg.MetadataValue.text(str(plan.as_of.date())),
            "research_end": dg.MetadataValue.text(f"{research_end.date()} ({source})"),
            "test_start": dg.MetadataValue.text(str(plan.test_start.date())),
            "transform_end": dg.MetadataValue.text(str(plan.transform_end.date())),
            "folds": dg.MetadataValue.int(len(plan.folds)),
            "retrain_every": dg.MetadataValue.int(plan.settings.retrain_every),
            "serving_window": dg.MetadataValue.json(serving.to_dict()),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[raw_prices, benchmark_prices, raw_macro, raw_fundamentals, universe, time_plan],
    kinds={"parquet"},
    code_version="3",
    check_specs=FEATURE_CHECK_SPECS,
)
def features(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    market_data: MarketDataResource,
) -> dg.MaterializeResult:
    """Every feature family the source's fields allow, per (date, ticker), point in time
    (stored statements by the date each became public); GARCH parameters are fitted once, on
    the dates before the replay's first fit. Its checks (no infinities, no feature missing
    everywhere) run on the frame it writes and block what reads it."""
    store = storage.store()
    plan = storage.read_plan()
    prices = universe_prices(store)
    benchmark = read_table(store, "benchmark", PRICES, [market_data.benchmark_ticker()])
    macro = read_table(store, "macro", MACRO, list(market_data.macro_series))
    fundamentals = read_table(store, "fundamentals", FUNDAMENTALS, universe_tickers(store))
    context.log.info("features: fitting GARCH(1,1) on returns up to %s", plan.transform_end.date())
    garch = fit_garch(prices, plan.transform_end)
    config = FeatureConfig(families=tuple(research.feature_families) or None, garch=garch)
    context.log.info(
        "features: %d price rows, %d tickers, %d fundamentals rows",
        len(prices),
        prices["ticker"].nunique(),
        len(fundamentals),
    )
    result = build_features(
        prices,
        benchmark=benchmark if not benchmark.empty else None,
        macro=macro if not macro.empty else None,
        fundamentals=fundamentals if not fundamentals.empty else None,
        universe=store.read("reference", "universe"),
        config=config,
    )
    for family, seconds in result.seconds.items():
        context.log.info("features: %-28s %.2f s", family, seconds)
    for family, reason in result.skipped.items():
        context.log.info("features: skipped %s (%s)", family, reason)
    path = store.write(result.frame, "features", "features")
    frame = result.frame
    family_of = {c: family for family, cols in result.columns.items() for c in cols}
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
            "garch_fitted_through": dg.MetadataValue.text(str(plan.transform_end.date())),
            "seconds_by_family": dg.MetadataValue.json(
                {k: round(v, 3) for k, v in result.seconds.items()}
            ),
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            **frame_schema(frame.head(0), {c: f"family {f}" for c, f in family_of.items()}),
            "path": dg.MetadataValue.path(path),
        },
        check_results=feature_check_results(frame),
    )


@dg.asset(group_name=GROUP, deps=[raw_prices], kinds={"parquet"}, code_version="1")
def labels(
    context: dg.AssetExecutionContext, storage: StorageResource, research: ResearchSettings
) -> dg.MaterializeResult:
    """Forward log returns per horizon with `label_end`; the only asset that reads the future."""
    store = storage.store()
    prices = universe_prices(store)
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
            **contract_schema(LABELS),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(group_name=GROUP, deps=[features, labels], kinds={"numpy"}, code_version="1")
def model_panel(
    context: dg.AssetExecutionContext, storage: StorageResource, research: ResearchSettings
) -> dg.MaterializeResult:
    """Features and labels as one dense panel ([dates, tickers, features] float32 and its
    labels), built once per run: every model, fold, prediction and drift step memory-maps
    it instead of re-reading and re-pivoting the tables."""
    store = storage.store()
    started = time.perf_counter()
    frame = store.read("features", "features")
    label_frame = store.read("features", "labels")
    if frame is None or label_frame is None:
        raise FileNotFoundError("features and labels are not stored yet: materialize them")
    rows = (len(frame), len(label_frame))
    panel = PanelData.from_frames(frame, label_frame, horizons=tuple(research.horizons))
    del frame, label_frame  # the panel holds their values: not kept while it is written
    where, fingerprint = storage.write_panel(panel)
    context.log.info(
        "model_panel: read the features and labels tables once (%d and %d rows) and stored "
        "the %s panel in %.1f s at %s",
        *rows,
        "x".join(map(str, panel.features.shape)),
        time.perf_counter() - started,
        where,
    )
    return dg.MaterializeResult(
        metadata={
            "shape": dg.MetadataValue.text("x".join(map(str, panel.features.shape))),
            "fingerprint": dg.MetadataValue.text(fingerprint),
            "megabytes": dg.MetadataValue.float(
                round((panel.features.nbytes + panel.targets.nbytes) / 2**20, 1)
            ),
            "path": dg.MetadataValue.path(where),
        }
    )


FEATURE_ASSETS = [time_plan, features, labels, model_panel]
