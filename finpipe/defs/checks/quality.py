"""Data quality checks on the stored ingest tables (rules live in `finpipe.data.quality`).

One check step per asset reads the stored table once and reports every check: schema, key
and row rules block downstream assets; gaps, staleness and the quarantine report warn.
"""

from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from finpipe.core.contracts import FUNDAMENTALS, MACRO, PRICES, Contract
from finpipe.data.ingest import read_table, universe_tickers
from finpipe.data.quality import (
    RULES_BY_CONTRACT,
    CheckOutcome,
    check_gaps,
    check_rule,
    check_schema,
    check_staleness,
    check_unique_key,
)
from finpipe.defs.assets.ingest import benchmark_prices, raw_fundamentals, raw_macro, raw_prices
from finpipe.defs.resources import MarketDataResource, StorageResource

Evaluate = Callable[[pd.DataFrame, MarketDataResource], CheckOutcome]


def to_result(name: str, outcome: CheckOutcome, blocking: bool) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    metadata: dict[str, dg.MetadataValue] = {
        "failing_rows": dg.MetadataValue.int(outcome.failing_rows)
    }
    if outcome.sample is not None and not outcome.sample.empty:
        metadata["sample"] = dg.MetadataValue.md(
            outcome.sample.astype(str).to_markdown(index=False)
        )
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata=metadata,
    )


def _today() -> pd.Timestamp:
    return pd.Timestamp.today().normalize()


def table_checks(contract: Contract) -> list[tuple[str, str, Evaluate, bool]]:
    """(name, description, evaluate, blocking) of every check a stored table gets."""
    checks: list[tuple[str, str, Evaluate, bool]] = [
        (
            "schema",
            "columns and dtypes match the contract",
            lambda f, _: check_schema(f, contract),
            True,
        ),
        ("unique_key", f"unique {contract.key}", lambda f, _: check_unique_key(f, contract), True),
    ]
    for rule in RULES_BY_CONTRACT[contract.name]:
        if rule.name != "duplicate_key":
            checks.append(
                (
                    rule.name,
                    f"no rows where {rule.description}",
                    lambda f, _, r=rule: check_rule(f, r, _today()),
                    True,
                )
            )
    if contract is PRICES:
        checks += [
            (
                "gaps",
                "no gap longer than market_data.max_gap_days trading sessions",
                lambda f, m: check_gaps(f, m.max_gap_days),
                False,
            ),
            (
                "staleness",
                "newest row within market_data.max_stale_days trading sessions of the end date",
                lambda f, m: check_staleness(f, pd.Timestamp(m.date_range()[1]), m.max_stale_days),
                False,
            ),
        ]
    return checks


def quarantine_result(storage: StorageResource, dataset: str) -> dg.AssetCheckResult:
    """Warns while `quarantine/<dataset>` holds rows, with a count per rule."""
    held = storage.store().read("quarantine", dataset)
    if held is None or held.empty:
        return dg.AssetCheckResult(
            check_name="quarantine", passed=True, description="no quarantined rows"
        )
    return dg.AssetCheckResult(
        check_name="quarantine",
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(held)} rows quarantined; see quarantine/{dataset}.parquet",
        metadata={"by_rule": dg.MetadataValue.json(held["rule"].value_counts().to_dict())},
    )


def expected_names(
    storage: StorageResource, market_data: MarketDataResource, dataset: str
) -> list[str]:
    """The names the configuration asks the source for, per raw dataset."""
    if dataset == "benchmark":
        return [market_data.benchmark_ticker()]
    if dataset == "macro":
        return list(market_data.macro_series) if market_data.source != "synthetic" else []
    if dataset == "fundamentals" and market_data.source != "live":
        return []
    return universe_tickers(storage.store())


def coverage_result(
    storage: StorageResource, market_data: MarketDataResource, dataset: str
) -> dg.AssetCheckResult:
    """Warns while names the configuration asks for have no stored table (the source could
    not provide them; `quarantine/universe.parquet` holds the reason)."""
    store = storage.store()
    missing = sorted(
        set(expected_names(storage, market_data, dataset)) - set(store.names("raw", dataset))
    )
    if not missing:
        return dg.AssetCheckResult(
            check_name="every_name_stored", passed=True, description="every name is stored"
        )
    held = store.read("quarantine", "universe")
    reasons = (
        {}
        if held is None
        else dict(held[held["dataset"] == dataset][["name", "reason"]].itertuples(index=False))
    )
    return dg.AssetCheckResult(
        check_name="every_name_stored",
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(missing)} names asked for are not stored: {missing[:10]}",
        metadata={
            "missing": dg.MetadataValue.json({n: reasons.get(n, "unknown") for n in missing})
        },
    )


def quality_checks(
    asset: dg.AssetsDefinition, dataset: str, contract: Contract
) -> dg.AssetChecksDefinition:
    """Every check of one stored dataset, evaluated in a single step."""
    checks = table_checks(contract)
    specs = [
        dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)
        for name, description, _, blocking in checks
    ]
    specs.append(
        dg.AssetCheckSpec("quarantine", asset=asset, description=f"rows of {dataset} in quarantine")
    )
    specs.append(
        dg.AssetCheckSpec(
            "every_name_stored",
            asset=asset,
            description=f"every {dataset} name the configuration asks for is stored",
        )
    )

    @dg.multi_asset_check(specs=specs, name=f"{dataset}_quality")
    def _checks(
        market_data: MarketDataResource, storage: StorageResource
    ) -> Iterator[dg.AssetCheckResult]:
        frame = read_table(storage.store(), dataset, contract)
        for name, _, evaluate, blocking in checks:
            if frame.empty:
                yield dg.AssetCheckResult(
                    check_name=name, passed=True, description="no rows stored"
                )
            else:
                yield to_result(name, evaluate(frame, market_data), blocking)
        yield quarantine_result(storage, dataset)
        yield coverage_result(storage, market_data, dataset)

    return _checks


INGEST_CHECKS = [
    quality_checks(raw_prices, "prices", PRICES),
    quality_checks(benchmark_prices, "benchmark", PRICES),
    quality_checks(raw_macro, "macro", MACRO),
    quality_checks(raw_fundamentals, "fundamentals", FUNDAMENTALS),
]
