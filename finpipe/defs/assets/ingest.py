"""Group `ingest`: universe, raw prices, benchmark, macro and fundamentals, refreshed
incrementally into Parquet under the storage root."""

import dagster as dg

from finpipe.core.contracts import FUNDAMENTALS, MACRO, PRICES, Contract
from finpipe.data.ingest import RefreshSummary, read_table, refresh_dataset, universe_prices
from finpipe.defs.metadata import contract_schema
from finpipe.defs.resources import FredCredentials, MarketDataResource, StorageResource

GROUP = "ingest"


def summary_metadata(
    summary: RefreshSummary, source: str, contract: Contract
) -> dict[str, dg.MetadataValue]:
    """Metadata every refreshing asset attaches: what was fetched, added, quarantined, and
    the table's column schema."""
    firsts = [r.first_date for r in summary.reports if r.first_date]
    lasts = [r.last_date for r in summary.reports if r.last_date]
    return {
        "source": dg.MetadataValue.text(source),
        "tables": dg.MetadataValue.int(len(summary.reports)),
        "actions": dg.MetadataValue.json(summary.actions()),
        "rows_fetched": dg.MetadataValue.int(summary.total("rows_fetched")),
        "rows_added": dg.MetadataValue.int(summary.total("rows_added")),
        "rows_quarantined": dg.MetadataValue.int(summary.total("rows_quarantined")),
        "rows_stored": dg.MetadataValue.int(summary.total("rows_stored")),
        "first_date": dg.MetadataValue.text(str(min(firsts)) if firsts else ""),
        "last_date": dg.MetadataValue.text(str(max(lasts)) if lasts else ""),
        "unavailable": dg.MetadataValue.json(summary.failed()),
        **contract_schema(contract),
    }


@dg.asset(group_name=GROUP, kinds={"parquet"})
def universe(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Tickers the pipeline covers, with names and sectors (from `market_data.universe`)."""
    frame = market_data.universe_frame()
    path = storage.store().write(frame, "reference", "universe")
    context.log.info("universe: %d tickers written to %s", len(frame), path)
    return dg.MaterializeResult(
        metadata={
            "tickers": dg.MetadataValue.int(len(frame)),
            "sectors": dg.MetadataValue.json(frame["sector"].value_counts().to_dict()),
            "preview": dg.MetadataValue.md(frame.head(25).to_markdown(index=False)),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(group_name=GROUP, deps=[universe], kinds={"parquet"})
def raw_prices(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Daily bars per ticker in `raw/prices/<TICKER>.parquet`; only new dates are fetched."""
    store = storage.store()
    tickers = store.read("reference", "universe")["ticker"].tolist()
    start, end = market_data.date_range()
    source = market_data.price_source()
    context.log.info(
        "raw_prices: %d tickers from %s, %s..%s", len(tickers), source.name, start, end
    )
    summary = refresh_dataset(store, "prices", source.prices, tickers, start, end)
    prices = universe_prices(store)
    fields = [c for c in PRICES.columns if c in prices and prices[c].notna().any()]
    return dg.MaterializeResult(
        metadata={
            **summary_metadata(summary, source.name, PRICES),
            "fields_available": dg.MetadataValue.json(fields),
            "dagster/row_count": dg.MetadataValue.int(len(prices)),
        }
    )


@dg.asset(group_name=GROUP, kinds={"parquet"})
def benchmark_prices(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """The market index used for regimes and beta, in `raw/benchmark/<TICKER>.parquet`."""
    start, end = market_data.date_range()
    source = market_data.price_source()
    ticker = market_data.benchmark_ticker()
    context.log.info("benchmark_prices: %s from %s", ticker, source.name)
    summary = refresh_dataset(storage.store(), "benchmark", source.prices, [ticker], start, end)
    return dg.MaterializeResult(
        metadata={
            **summary_metadata(summary, source.name, PRICES),
            "ticker": dg.MetadataValue.text(ticker),
        }
    )


@dg.asset(group_name=GROUP, kinds={"parquet"})
def raw_macro(
    context: dg.AssetExecutionContext,
    market_data: MarketDataResource,
    storage: StorageResource,
    fred: FredCredentials,
) -> dg.MaterializeResult:
    """Macro series by FRED id with point-in-time `available_at`, in `raw/macro/<ID>.parquet`."""
    source = market_data.macro_source(fred)
    if source is None:
        reason = market_data.no_macro_reason(fred)
        context.log.warning("raw_macro: %s; nothing stored", reason)
        return dg.MaterializeResult(metadata={"skipped": dg.MetadataValue.text(reason)})
    start, end = market_data.date_range()
    series = list(market_data.macro_series)
    context.log.info("raw_macro: %s from %s", series, source.name)
    summary = refresh_dataset(storage.store(), "macro", source.macro, series, start, end)
    macro = read_table(storage.store(), "macro", MACRO)
    counts = macro.groupby("series_id")["date"].agg(["min", "max", "count"]).astype(str)
    return dg.MaterializeResult(
        metadata={
            **summary_metadata(summary, source.name, MACRO),
            "series": dg.MetadataValue.md(counts.to_markdown()),
        }
    )


@dg.asset(group_name=GROUP, deps=[universe], kinds={"parquet"})
def raw_fundamentals(
    context: dg.AssetExecutionContext, market_data: MarketDataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Quarterly statement items per ticker in `raw/fundamentals/<TICKER>.parquet`, with the
    date each became public (the fundamentals feature families join them by that date)."""
    source = market_data.fundamentals_source()
    if source is None:
        reason = f"source {market_data.source} has no fundamentals; nothing stored"
        context.log.info("raw_fundamentals: %s", reason)
        return dg.MaterializeResult(metadata={"skipped": dg.MetadataValue.text(reason)})
    store = storage.store()
    tickers = store.read("reference", "universe")["ticker"].tolist()
    start, end = market_data.date_range()
    summary = refresh_dataset(store, "fundamentals", source.fundamentals, tickers, start, end)
    return dg.MaterializeResult(metadata=summary_metadata(summary, source.name, FUNDAMENTALS))


INGEST_ASSETS = [universe, raw_prices, benchmark_prices, raw_macro, raw_fundamentals]
