"""The FastAPI application: read endpoints over the served tables, run requests, health.

Every endpoint but `/docs` and `/openapi.json` needs an API key in the `X-API-Key` header
(`read` scope; run requests `admin`), counts against the key's rate limit, and answers
401 (no key or an unknown one), 403 (a read key on an admin route), 429 with `Retry-After`,
422 for a malformed parameter (tickers, models and names by the strict identifier rules),
404 for a ticker, model or version the data lacks, 414 for a path or query string over 2 KiB, 502
when the Dagster webserver refuses a run request, and 503 with the file and the asset to
materialize when the data behind it is missing or unreadable (or the webserver is down).
Read responses carry an ETag (the data's content hash and the parameters) and answer a
matching `If-None-Match` with 304.
"""

import datetime as dt
import enum
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator, TypeAdapter, ValidationError

from finpipe.core.calendar import NEW_YORK, count_sessions
from finpipe.core.identifiers import validate_model, validate_name, validate_ticker
from finpipe.core.storage import ParquetStore
from finpipe.forecasting.predictions import HISTORY_PATH
from finpipe.forecasting.signals import SIGNALS
from finpipe.serving import data, schemas
from finpipe.serving.auth import ADMIN, READ, ApiKey, KeyRing, load_keys
from finpipe.serving.cache import (
    DataUnavailable,
    Loaded,
    ResponseCache,
    Source,
    TableCache,
    etag_matches,
    make_etag,
)
from finpipe.serving.dagster_client import (
    REQUESTED_BY_TAG,
    DagsterClient,
    DagsterRejected,
    DagsterUnavailable,
)
from finpipe.serving.middleware import CachedReads, UriLimit
from finpipe.serving.model_versions import RegistryReader
from finpipe.serving.ratelimit import RateLimiter, retry_after
from finpipe.serving.settings import Settings

MAX_LIMIT = 1000
log = logging.getLogger("uvicorn.error")  # uvicorn's server log, which it configures

Ticker = Annotated[str, AfterValidator(validate_ticker)]
Model = Annotated[str, AfterValidator(validate_model)]
Name = Annotated[str, AfterValidator(validate_name)]

TickerQuery = Annotated[
    Ticker | None, Query(description="an upper-case symbol such as AAPL, BRK-B or ^GSPC")
]
HorizonQuery = Annotated[int | None, Query(ge=1, le=252, description="trading days ahead")]
ModelQuery = Annotated[Model | None, Query(description="ridge, ensemble, lstm@challenger, ...")]
MethodQuery = Annotated[Name | None, Query(description="a portfolio construction method")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]
SignalQuery = Annotated[Literal[SIGNALS] | None, Query(description="one signal only")]


class Job(enum.StrEnum):
    """The jobs a run request may launch."""

    retrain = "retrain"
    evaluate = "evaluate"
    daily_refresh = "daily_refresh"


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Error, "description": what}
    for code, what in {
        401: "no API key, or an unknown one",
        403: "the key's scope does not allow this endpoint",
        404: "the data has no such ticker, model, version or run",
        414: "path or query string too long",
        422: "a malformed parameter",
        429: "the key's rate limit is exhausted (see Retry-After)",
        502: "the Dagster webserver refused the run request",
        503: "the data or service behind the endpoint is unavailable",
    }.items()
}


@cache
def adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


def trading_age(newest: pd.Timestamp) -> int:
    """NYSE sessions after `newest` through today in New York."""
    today = pd.Timestamp.now(tz=NEW_YORK).date()
    return int(count_sessions(newest, today)[0])


def create_app(settings: Settings) -> FastAPI:
    """The application over `settings.data_root`; raises KeyConfigError for bad key entries."""
    keys = KeyRing(load_keys(settings.keys_file, settings.keys))
    tables = TableCache(ParquetStore(settings.data_root), settings.reload_check_s)
    responses = ResponseCache()
    limiter = RateLimiter(settings.rate_per_s, settings.burst)
    registry = RegistryReader(settings.registry_uri(), settings.registry_ttl_s)
    header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="`finpipe keys create NAME` makes one"
    )

    def authorise(scope: str) -> Callable:
        async def check(secret: Annotated[str | None, Security(header)]) -> ApiKey:
            challenge = {"WWW-Authenticate": "ApiKey"}
            if not secret:
                raise HTTPException(401, "missing API key: send it as X-API-Key", challenge)
            key = keys.find(secret)
            if key is None:
                raise HTTPException(401, "unknown API key", challenge)
            if not key.allows(scope):
                raise HTTPException(
                    403, f"key {key.name!r} has scope {key.scope!r}; this endpoint needs {scope!r}"
                )
            wait = limiter.take(key.name)
            if wait:
                raise HTTPException(
                    429,
                    f"rate limit of {settings.rate_per_s:g} requests/s (burst {settings.burst}) "
                    f"exceeded for key {key.name!r}",
                    {"Retry-After": retry_after(wait)},
                )
            return key

        return check

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10.0) as http:
            app.state.dagster = DagsterClient(settings.dagster_url, http)
            yield

    app = FastAPI(
        title="finpipe predictions",
        summary="Read-only API over finpipe's served forecasts, with run requests to Dagster.",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.add_middleware(CachedReads, responses=responses, tables=tables, keys=keys, limiter=limiter)
    app.add_middleware(UriLimit)
    read = APIRouter(dependencies=[Depends(authorise(READ))])
    admin = APIRouter(tags=["runs"])
    require_admin = authorise(ADMIN)

    def respond(
        request: Request,
        params: dict[str, Any],
        inputs: list[Loaded],
        model: Any,
        build: Callable[[], Any],
        origin: Source | str,
    ) -> Response:
        """The rendered body for these parameters and data (304 when the client has it).
        `origin` is the one file `inputs` holds (CachedReads may then serve the body again
        while the file is unchanged), or what derived data it is made of."""
        etag = make_etag(request.scope["path"], params, [i.digest for i in inputs])
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)

        def render() -> bytes:
            try:
                return adapter(model).dump_json(adapter(model).validate_python(build()))
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(map(str, first["loc"]))
                raise DataUnavailable(
                    f"{what} does not match the API's schema ({where}: {first['msg']})"
                ) from None

        what, sources = (origin.name, (origin,)) if isinstance(origin, Source) else (origin, ())
        digests = tuple(i.digest for i in inputs) if sources else ()
        request_key = (request.scope["path"], request.scope["query_string"])
        rendered = responses.get(request_key, etag, render, sources, digests)
        return Response(rendered.body, media_type="application/json", headers=headers)

    # -- predictions -----------------------------------------------------------------------

    @read.get("/predictions/latest", response_model=schemas.Page[schemas.Prediction])
    async def latest_predictions(
        request: Request,
        ticker: TickerQuery = None,
        horizon: HorizonQuery = None,
        model: ModelQuery = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        """The newest date's predictions of every served model (members, challengers and the
        ensemble) with intervals, versions and `trained_through`."""
        table = tables.get(data.LATEST)
        filters = {"ticker": ticker, "horizon": horizon, "model": model}

        def build() -> dict[str, Any]:
            rows = data.select(table.value, "the latest predictions", **filters)
            return data.page(table.value, rows, offset, limit)

        page = schemas.Page[schemas.Prediction]
        params = {**filters, "limit": limit, "offset": offset}
        return respond(request, params, [table], page, build, data.LATEST)

    @read.get("/predictions/signals", response_model=schemas.Page[schemas.Signal])
    async def signals(
        request: Request,
        ticker: TickerQuery = None,
        horizon: HorizonQuery = None,
        signal: SignalQuery = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        """The ensemble's STRONG_BUY ... STRONG_SELL signal per ticker and horizon."""
        table = tables.get(data.SIGNALS)

        def build() -> dict[str, Any]:
            rows = data.select(
                table.value, "the signals", ticker=ticker, horizon=horizon, signal=signal
            )
            return data.page(table.value, rows, offset, limit)

        params = {"ticker": ticker, "horizon": horizon, "signal": signal}
        params |= {"limit": limit, "offset": offset}
        page = schemas.Page[schemas.Signal]
        return respond(request, params, [table], page, build, data.SIGNALS)

    @read.get("/predictions/ranking", response_model=schemas.Page[schemas.Ranked])
    async def ranking(request: Request, limit: Limit = 100, offset: Offset = 0) -> Response:
        """The universe ranked by expected return per unit of interval width, best first."""
        table = tables.get(data.RANKING)
        page = schemas.Page[schemas.Ranked]
        return respond(
            request,
            {"limit": limit, "offset": offset},
            [table],
            page,
            lambda: data.page(table.value, range(len(table.value.rows)), offset, limit),
            data.RANKING,
        )

    @read.get(
        "/predictions/history/{ticker:path}",
        response_model=schemas.Page[schemas.HistoricalPrediction],
    )
    async def history(
        request: Request,
        ticker: Annotated[Ticker, Path(description="an upper-case symbol such as AAPL")],
        horizon: HorizonQuery = None,
        model: ModelQuery = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        """Every served prediction for a ticker, newest date first, with the realised return
        once its label is known."""
        names = tables.names(*HISTORY_PATH)
        if not names:
            raise DataUnavailable(
                "predictions/history/ has no files: materialize the `prediction_history` asset "
                "(group `predictions`)"
            )
        parts = [tables.get(data.history_source(name)) for name in names]
        combined = tables.derive(
            "history", parts, lambda: data.history_by_ticker([p.value for p in parts])
        )

        def build() -> dict[str, Any]:
            own = combined.value.get(ticker)
            if own is None:
                raise data.NotFound(f"ticker {ticker!r} has no prediction history")
            rows = data.select(own, f"{ticker}'s history", horizon=horizon, model=model)
            days = own.frame["date"].to_numpy()[rows]
            keep = np.ones(len(rows), dtype=bool)
            if start is not None:
                keep &= days >= np.datetime64(start)
            if end is not None:
                keep &= days <= np.datetime64(end)
            return data.page(own, rows[keep], offset, limit)

        params = {"horizon": horizon, "model": model, "start": start, "end": end}
        params |= {"limit": limit, "offset": offset}
        page = schemas.Page[schemas.HistoricalPrediction]
        return respond(request, params, [combined], page, build, "predictions/history")

    # -- portfolio -------------------------------------------------------------------------

    @read.get("/portfolio/weights", response_model=schemas.Page[schemas.TargetWeight])
    async def target_weights(
        request: Request,
        method: MethodQuery = None,
        ticker: TickerQuery = None,
        date: Annotated[dt.date | None, Query(description="default: the newest")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        """Target weights of each construction method on one date (default: the newest)."""
        table = tables.get(data.WEIGHTS)

        def build() -> dict[str, Any]:
            days = table.value.frame["date"]
            day = days.max() if date is None else pd.Timestamp(date)
            if not (days == day).any():
                raise data.NotFound(f"no target weights dated {day.date()}")
            rows = data.select(
                table.value, "the target weights", method=method, ticker=ticker, date=day
            )
            return data.page(table.value, rows, offset, limit)

        params = {"method": method, "ticker": ticker, "date": date, "limit": limit}
        params |= {"offset": offset}
        page = schemas.Page[schemas.TargetWeight]
        return respond(request, params, [table], page, build, data.WEIGHTS)

    @read.get("/portfolio/risk", response_model=list[schemas.RiskMeasure])
    async def risk_report(request: Request, method: MethodQuery = None) -> Response:
        """VaR and CVaR of each method's book: historical, Gaussian and GARCH, 1 and 10 days,
        at 95% and 99%."""
        table = tables.get(data.RISK)

        def build() -> list[dict[str, Any]]:
            rows = data.select(table.value, "the risk report", method=method)
            return [table.value.rows[i] for i in rows]

        model = list[schemas.RiskMeasure]
        return respond(request, {"method": method}, [table], model, build, data.RISK)

    @read.get("/portfolio/summary", response_model=dict[str, schemas.PortfolioSummary])
    async def portfolio_summary(request: Request) -> Response:
        """Each method's book: beta, gross and net exposure, names held, as-of date."""
        doc = tables.get(data.PORTFOLIO_SUMMARY)
        model = dict[str, schemas.PortfolioSummary]
        return respond(request, {}, [doc], model, lambda: doc.value, data.PORTFOLIO_SUMMARY)

    # -- evaluation and models -------------------------------------------------------------

    @read.get("/backtest/summary", response_model=schemas.BacktestSummary)
    async def backtest_summary(request: Request) -> Response:
        """The backtest report's numbers: performance net of costs, forecast skill, interval
        coverage (overall and by year), the replayed procedure and the test period."""
        doc = tables.get(data.BACKTEST)
        return respond(
            request, {}, [doc], schemas.BacktestSummary, lambda: doc.value, data.BACKTEST
        )

    async def snapshot() -> Loaded:
        found = await run_in_threadpool(registry.snapshot)
        return Loaded(found, found.digest)

    @read.get("/models", response_model=list[schemas.Component])
    async def models(request: Request) -> Response:
        """Every registered model (each served family and the ensemble) with its champion and
        challenger versions."""
        found = await snapshot()

        def build() -> list[dict[str, Any]]:
            out = []
            for component, versions in found.value.components.items():
                role = {a: v for v in versions for a in v["aliases"]}
                out.append(
                    {
                        "component": component,
                        "versions": len(versions),
                        "champion": role.get("champion"),
                        "challenger": role.get("challenger"),
                    }
                )
            return out

        model = list[schemas.Component]
        return respond(request, {}, [found], model, build, "the model registry")

    @read.get("/models/{component}/versions", response_model=schemas.Page[schemas.ModelVersionInfo])
    async def model_versions(
        request: Request,
        component: Annotated[Name, Path(description="a model family, or ensemble")],
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        """A component's registered versions, newest first, with `trained_through`, their fit
        window tags and validation metrics."""
        found = await snapshot()

        def build() -> dict[str, Any]:
            versions = found.value.components.get(component)
            if versions is None:
                have = sorted(found.value.components)
                raise data.NotFound(f"no registered model finpipe-{component}; have {have}")
            return {
                "total": len(versions),
                "offset": offset,
                "limit": limit,
                "items": versions[offset : offset + limit],
            }

        params = {"limit": limit, "offset": offset}
        page = schemas.Page[schemas.ModelVersionInfo]
        return respond(request, params, [found], page, build, "the model registry")

    @read.get("/health", response_model=schemas.Health, responses={503: {"model": schemas.Health}})
    async def health() -> JSONResponse:
        """The newest prediction date, its age in NYSE trading days and the champion versions;
        503 and the reasons when the data is older than FINPIPE_API_MAX_AGE_DAYS or unreadable."""
        reasons: list[str] = []
        newest, age, champions = None, None, {}
        try:
            frame = tables.get(data.LATEST).value.frame
            if frame.empty:
                reasons.append(f"{data.LATEST.name} has no rows")
            else:
                newest = frame["date"].max()
                age = trading_age(newest)
                if age > settings.max_age_days:
                    reasons.append(
                        f"the newest predictions ({newest.date()}) are {age} trading days old; "
                        f"FINPIPE_API_MAX_AGE_DAYS allows {settings.max_age_days}"
                    )
        except (DataUnavailable, ValueError) as error:
            reasons.append(str(error))
        try:
            champions = (await run_in_threadpool(registry.snapshot)).champions()
        except DataUnavailable as error:
            reasons.append(str(error))
        body = schemas.Health(
            status="unhealthy" if reasons else "healthy",
            reasons=reasons,
            newest_prediction_date=None if newest is None else newest.date(),
            age_trading_days=age,
            max_age_trading_days=settings.max_age_days,
            champions=champions,
            cache={
                **{f"table_{k}": v for k, v in tables.stats.items()},
                **{f"response_{k}": v for k, v in responses.stats.items()},
            },
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if reasons else 200)

    # -- run requests ----------------------------------------------------------------------

    @admin.post("/runs/{job}", status_code=202, response_model=schemas.RunRequested)
    async def request_run(
        request: Request, job: Job, key: Annotated[ApiKey, Depends(require_admin)]
    ) -> schemas.RunRequested:
        """Ask the Dagster webserver to queue a run of `job` with the deployment's
        configuration; the run is tagged with the key's name."""
        run = await request.app.state.dagster.launch(job.value, {REQUESTED_BY_TAG: key.name})
        log.info("key %s requested %s: run %s", key.name, job.value, run["runId"])
        return schemas.RunRequested(run_id=run["runId"], job=run["jobName"], status=run["status"])

    @admin.get(
        "/runs/{run_id}",
        response_model=schemas.RunStatus,
        dependencies=[Depends(require_admin)],
    )
    async def run_status(request: Request, run_id: UUID) -> schemas.RunStatus:
        """A run's status as the Dagster webserver reports it."""
        run = await request.app.state.dagster.run(str(run_id))
        if run is None:
            raise data.NotFound(f"the Dagster webserver has no run {run_id}")
        return schemas.RunStatus(
            run_id=run["runId"],
            job=run["jobName"],
            status=run["status"],
            start_time=run["startTime"],
            end_time=run["endTime"],
            requested_by=run["tags"].get(REQUESTED_BY_TAG),
        )

    app.include_router(read, tags=["read"])
    app.include_router(admin)
    install_error_handlers(app)
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Clear JSON errors for every failure; never a stack trace."""

    def error(status: int, detail: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    @app.exception_handler(DataUnavailable)
    async def unavailable(request: Request, exc: DataUnavailable) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(data.NotFound)
    async def not_found(request: Request, exc: data.NotFound) -> JSONResponse:
        return error(404, str(exc.args[0]))

    @app.exception_handler(DagsterUnavailable)
    async def dagster_down(request: Request, exc: DagsterUnavailable) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(DagsterRejected)
    async def dagster_refused(request: Request, exc: DagsterRejected) -> JSONResponse:
        return error(502, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "where": ".".join(map(str, e["loc"])),
                "problem": e["msg"].removeprefix("Value error, ")[:300],
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        return error(422, detail, errors=problems)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__}); the service log has details")
