"""The API's response bodies (pydantic models: the OpenAPI schema at `/docs` shows them).

Dates are ISO dates. A float the tables hold as NaN or +-inf is `null`: an unknown value
(a realised return not known yet) or an unbounded interval side.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """One page of a long list: `items[offset : offset + limit]` of `total`."""

    total: int
    offset: int
    limit: int
    items: list[Item]


class Error(BaseModel):
    """What went wrong, in words."""

    detail: str


class Prediction(BaseModel):
    """A row of `predictions/latest.parquet` (the PREDICTIONS contract)."""

    date: dt.date
    ticker: str
    horizon: int
    model: str
    prediction: float = Field(description="expected forward log return")
    lower: float | None = Field(description="interval lower bound (null: unbounded)")
    upper: float | None = Field(description="interval upper bound (null: unbounded)")
    interval_level: float
    confidence: float
    model_version: str = Field(description="models:/finpipe-<family>/<n>")
    trained_through: dt.date


class HistoricalPrediction(Prediction):
    """A served prediction and, once its label is known, the realised return."""

    realised_return: float | None = Field(description="null until the label is known")


class Signal(Prediction):
    """An ensemble prediction with its STRONG_BUY ... STRONG_SELL signal."""

    signal: str


class Ranked(BaseModel):
    """A row of the ranking: expected return per unit of interval half-width, best first."""

    rank: int
    date: dt.date
    ticker: str
    horizon: int
    prediction: float
    lower: float | None
    upper: float | None
    confidence: float
    score: float | None
    signal: str


class TargetWeight(BaseModel):
    """A row of `portfolio/target_weights.parquet`."""

    date: dt.date
    method: str
    ticker: str
    weight: float
    expected_return: float | None
    model_version: str


class RiskMeasure(BaseModel):
    """A row of `portfolio/risk_report.parquet`."""

    method: str
    measure: Literal["var", "cvar"]
    model: Literal["historical", "gaussian", "garch"]
    horizon_days: int
    level: float
    value: float | None


class PortfolioSummary(BaseModel):
    """One construction method's book (`portfolio/summary.json`)."""

    beta: float | None
    gross: float
    net: float
    n_names: int
    as_of: dt.date


class BacktestSummary(BaseModel):
    """`reports/backtest/metrics.json`: the walk-forward replay's test period, scored."""

    title: str
    test_period: str
    procedure: str
    config: dict[str, Any]
    performance: list[dict[str, Any]]
    forecast: list[dict[str, Any]]
    coverage: list[dict[str, Any]]
    coverage_by_year: list[dict[str, Any]]
    by_regime: list[dict[str, Any]] = []
    stress: list[dict[str, Any]] = []


class ModelVersionInfo(BaseModel):
    """A registered version with its aliases, fit window tags and validation metrics."""

    component: str = Field(description="model family, or ensemble")
    version: str
    uri: str
    aliases: list[str]
    trained_through: dt.date | None
    as_of: dt.date | None
    tags: dict[str, str]
    metrics: dict[str, float | None]


class Component(BaseModel):
    """A registered model (`finpipe-<component>`): its champion, challenger, version count."""

    component: str
    versions: int
    champion: ModelVersionInfo | None
    challenger: ModelVersionInfo | None


class Health(BaseModel):
    """Whether the served data is current: its newest date and age in NYSE trading days."""

    status: Literal["healthy", "unhealthy"]
    reasons: list[str]
    newest_prediction_date: dt.date | None
    age_trading_days: int | None
    max_age_trading_days: int
    champions: dict[str, str] = Field(description="component -> models:/ URI of the champion")
    cache: dict[str, int]


class RunRequested(BaseModel):
    """A run the Dagster webserver accepted (queued)."""

    run_id: str
    job: str
    status: str


class RunStatus(BaseModel):
    """A Dagster run's status, as the webserver reports it."""

    run_id: str
    job: str
    status: str
    start_time: float | None
    end_time: float | None
    requested_by: str | None
