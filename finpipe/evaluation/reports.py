"""Backtest reports: a self-contained HTML page, a Markdown summary, PNG plots, and the metric
tables as Parquet and JSON, all written into one folder.

    out/report.html      every plot embedded (base64 PNG) and every table; opens offline
    out/summary.md       headline tables, linking the PNGs
    out/plots/*.png      equity curves vs baselines, drawdowns, rolling rank IC, per-regime
                         bars, calibration/coverage, ensemble weights over time, and the
                         construction methods beside the top-k book and the baselines
    out/metrics/*.parquet, out/metrics.json

Plots use matplotlib with the Agg backend (no display needed), imported only when a report
is rendered. Every file is written to a temporary name and renamed into place.

To look at the page the way a reader will, screenshot it with headless Chromium (Debian:
apt-get install chromium-headless-shell, then use chromium-headless-shell without --headless):
    chromium --headless --disable-gpu --window-size=1400,6000 \
        --screenshot=report.png file:///path/to/out/report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.core.metrics import drawdown_series
from finpipe.core.storage import atomic_write_bytes, parquet_bytes
from finpipe.evaluation.backtest import BacktestResult
from finpipe.evaluation.baselines import BASELINES
from finpipe.evaluation.regimes import STRESS_WINDOWS
from finpipe.evaluation.research import DECISION_SUMMARY
from finpipe.models.registry import is_pytorch_family, list_models

PLOTS = (
    "equity_curves",
    "drawdowns",
    "rolling_rank_ic",
    "regime_bars",
    "calibration_coverage",
    "ensemble_weights",
    "construction_comparison",
)
BASELINE_STYLE = {"linestyle": "--", "linewidth": 1.0, "alpha": 0.9}
MODEL_STYLE = {"linestyle": "-", "linewidth": 1.4}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "backtest reports draw their plots with matplotlib; install it (pip install matplotlib)"
        ) from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _model_colours(result: BacktestResult) -> dict[str, Any]:
    """One colour per model, the same in every plot."""
    names = sorted(
        {n.split("/", 1)[0] for n in result.daily_returns.columns}
        | set(result.daily_ic.columns)
        | set(result.calibration.get("model", pd.Series(dtype=object)))
    )
    cmap = _pyplot().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _style(name: str, colours: dict[str, Any]) -> dict[str, Any]:
    """Dashed lines for baselines, solid for models and the ensemble; a colour per model."""
    model = name.split("/", 1)[0]
    base = BASELINE_STYLE if model in BASELINES else MODEL_STYLE
    return {**base, "color": colours.get(model)}


def _strategy_panels(result: BacktestResult, title: str, ylabel: str, transform: Any) -> Any:
    """One panel per portfolio kind with every strategy of that kind and buy-and-hold."""
    plt = _pyplot()
    colours = _model_colours(result)
    kinds = list(result.config.kinds)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(11, 4.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        for name in result.daily_returns.columns:
            if name.endswith(f"/{kind}") or name.endswith("/buy_and_hold"):
                series = transform(result.daily_returns[name].dropna())
                ax.plot(series.index, series.to_numpy(), label=name, **_style(name, colours))
        ax.set_title(title.format(kind=kind.replace("_", "-")))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2, loc="best")
    return fig


def plot_equity_curves(result: BacktestResult) -> bytes:
    """Growth of 1 (net of costs) per strategy, one panel per portfolio kind; baselines dashed."""
    fig = _strategy_panels(
        result,
        "Equity curves, {kind} (net of costs, log scale)",
        "growth of 1",
        lambda r: (1.0 + r).cumprod(),
    )
    for ax in fig.axes:
        ax.set_yscale("log")
    return _png(fig)


def plot_drawdowns(result: BacktestResult) -> bytes:
    """Drawdown from the running peak per strategy, one panel per portfolio kind."""
    fig = _strategy_panels(
        result,
        "Drawdowns, {kind} (net of costs)",
        "% below peak",
        lambda r: 100 * drawdown_series(r),
    )
    return _png(fig)


def plot_rolling_rank_ic(result: BacktestResult) -> bytes:
    """Rolling mean of each model's daily rank IC, with zero marked."""
    plt = _pyplot()
    colours = _model_colours(result)
    window = result.config.rolling_ic_window
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for name in result.daily_ic.columns:
        series = result.daily_ic[name].dropna()
        rolling = series.rolling(window, min_periods=max(window // 2, 1)).mean()
        ax.plot(rolling.index, rolling.to_numpy(), label=name, **_style(name, colours))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title(f"Rolling {window}-day mean rank IC (horizon {_horizon(result)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="best")
    return _png(fig)


def plot_regime_bars(result: BacktestResult) -> bytes:
    """Sharpe ratio (first portfolio kind) and mean rank IC per regime, with 95% intervals."""
    plt = _pyplot()
    colours = _model_colours(result)
    table = result.by_regime
    types = list(dict.fromkeys(table["regime_type"])) if len(table) else []
    n_cols = max(len(types), 1)
    fig, axes = plt.subplots(2, n_cols, figsize=(6.5 * n_cols, 8.5), squeeze=False)
    kind = result.config.kinds[0]
    for col, regime_type in enumerate(types):
        part = table[table["regime_type"] == regime_type]
        returns = part[(part["series"] == "return") & part["name"].str.endswith(f"/{kind}")]
        # Sharpe standard error, annualised: sqrt((1 + SR_daily^2 / 2) / n) * sqrt(252).
        _grouped_bars(
            axes[0, col],
            returns,
            "sharpe",
            lambda rows: (
                1.96 * np.sqrt((1 + rows["sharpe"] ** 2 / 504) / rows["n"].clip(lower=1)) * 252**0.5
            ),
            f"Sharpe by {regime_type} regime ({kind.replace('_', '-')}, net)",
            colours,
        )
        _grouped_bars(
            axes[1, col],
            part[part["series"] == "rank_ic"],
            "mean",
            lambda rows: 1.96 * (rows["mean"] / rows["t_stat"]).abs(),
            f"Mean rank IC by {regime_type} regime",
            colours,
        )
    if not types:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, "no regime labels in the test period", ha="center")
            ax.set_axis_off()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _png(fig)


def _grouped_bars(
    ax: Any,
    rows: pd.DataFrame,
    value: str,
    error: Callable[[pd.DataFrame], pd.Series],
    title: str,
    colours: dict[str, Any],
) -> None:
    regimes = list(dict.fromkeys(rows["regime"]))
    names = list(dict.fromkeys(rows["name"]))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(regimes))
    for i, name in enumerate(names):
        sub = rows[rows["name"] == name].set_index("regime").reindex(regimes)
        model = name.split("/", 1)[0]
        ax.bar(
            x + i * width - 0.4 + width / 2,
            sub[value].to_numpy(np.float64),
            width,
            yerr=np.nan_to_num(error(sub).to_numpy(np.float64)),
            capsize=2,
            label=model,
            color=colours.get(model),
            hatch="//" if model in BASELINES else None,
            edgecolor="white",
        )
    counts = rows.groupby("regime", sort=False)["n"].max()
    ax.set_xticks(x, [f"{r}\n(n={int(counts[r])})" for r in regimes])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def plot_calibration_coverage(result: BacktestResult) -> bytes:
    """Ranking calibration (realised return per cross-sectional prediction bin), level
    calibration (mean realised vs mean predicted return per bin, models only) and interval
    coverage (empirical vs nominal, where models give intervals)."""
    plt = _pyplot()
    colours = _model_colours(result)
    fig, (rank_ax, level_ax, cover_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    horizon = _horizon(result)
    calib = result.calibration[result.calibration["horizon"] == horizon]
    for name, part in calib.groupby("model", sort=True):
        if part["bin"].nunique() < 2:
            continue
        style = _style(name, colours)
        rank_ax.plot(part["bin"], 1e4 * part["mean_realised"], marker="o", label=name, **style)
        if name not in BASELINES:
            level_ax.plot(
                1e4 * part["mean_prediction"],
                1e4 * part["mean_realised"],
                marker="o",
                label=name,
                **style,
            )
    rank_ax.axhline(0.0, color="black", linewidth=0.8)
    rank_ax.set_xticks(sorted(calib["bin"].unique()))
    rank_ax.set_xlabel("prediction bin (1 = lowest each date)")
    rank_ax.set_ylabel("mean realised return (bp)")
    rank_ax.set_title(f"Ranking: realised return by bin (h={horizon})", fontsize=10)
    rank_ax.legend(fontsize=7, ncol=2)
    lims = [*level_ax.get_xlim(), *level_ax.get_ylim()]
    level_ax.plot([min(lims), max(lims)], [min(lims), max(lims)], color="grey", lw=0.8)
    level_ax.set_xlabel("mean predicted return (bp)")
    level_ax.set_ylabel("mean realised return (bp)")
    level_ax.set_title("Level: realised vs predicted (diagonal = calibrated)", fontsize=10)
    level_ax.legend(fontsize=7)
    for ax in (rank_ax, level_ax):
        ax.grid(alpha=0.3)
    coverage = result.coverage
    if len(coverage):
        labels = [f"{m} h{h}" for m, h in zip(coverage["model"], coverage["horizon"], strict=True)]
        x = np.arange(len(coverage))
        cover_ax.bar(x - 0.2, coverage["interval_level"], 0.4, label="nominal", color="#bbbbbb")
        cover_ax.bar(x + 0.2, coverage["coverage"], 0.4, label="empirical", color="#1f77b4")
        cover_ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        cover_ax.set_ylim(0, 1)
        cover_ax.legend(fontsize=8)
    else:
        cover_ax.text(0.5, 0.5, "no prediction intervals\nin these predictions", ha="center")
        cover_ax.set_axis_off()
    cover_ax.set_title("Interval coverage: empirical vs nominal", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_ensemble_weights(result: BacktestResult) -> bytes:
    """Ensemble member weights per fold (from each fold's test start), traded horizon."""
    plt = _pyplot()
    colours = _model_colours(result)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    weights = result.weights
    if len(weights) and {"test_start", "model", "weight", "horizon"} <= set(weights.columns):
        part = weights[weights["horizon"] == _horizon(result)]
        wide = part.pivot_table(index="test_start", columns="model", values="weight")
        wide = wide.sort_index().fillna(0.0)
        end = result.daily_returns.index.max()
        if len(result.daily_returns) and end > wide.index[-1]:
            wide.loc[end] = wide.iloc[-1]
        ax.stackplot(
            wide.index,
            wide.to_numpy().T,
            labels=list(wide.columns),
            colors=[colours.get(m) for m in wide.columns],
            step="post",
        )
        ax.set_ylim(0, max(1.0, float(wide.sum(axis=1).max())))
        ax.legend(fontsize=8, loc="upper left", ncol=4)
        ax.set_ylabel("weight")
    else:
        ax.text(0.5, 0.5, "no ensemble weights recorded", ha="center")
        ax.set_axis_off()
    ax.set_title(f"Ensemble weights over time (h={_horizon(result)}, per walk-forward fold)")
    return _png(fig)


def plot_construction_comparison(result: BacktestResult) -> bytes:
    """Growth of 1 (net of costs) of every construction method beside the top-k book and
    the baselines (dashed), and their Sharpe ratios with bootstrap intervals."""
    plt = _pyplot()
    fig, (curve_ax, bar_ax) = plt.subplots(
        1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [2, 1]}
    )
    table = result.constructions
    if table.empty:
        for ax in (curve_ax, bar_ax):
            ax.text(0.5, 0.5, "no construction methods were replayed", ha="center")
            ax.set_axis_off()
        return _png(fig)
    cmap = _pyplot().get_cmap("tab10")
    colours = {name: cmap(i % cmap.N) for i, name in enumerate(table["strategy"])}
    for name in table["strategy"]:
        series = (1.0 + result.construction_returns[name].dropna()).cumprod()
        reference = not name.startswith("construction/")
        style = BASELINE_STYLE if reference else MODEL_STYLE
        curve_ax.plot(series.index, series.to_numpy(), label=name, color=colours[name], **style)
    curve_ax.set_yscale("log")
    curve_ax.set_title("Construction methods vs top-k and baselines (net of costs, log scale)")
    curve_ax.set_ylabel("growth of 1")
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(fontsize=7, ncol=2, loc="best")
    y = np.arange(len(table))
    sharpe = table["sharpe"].to_numpy(np.float64)
    errors = np.vstack([sharpe - table["sharpe_lo"], table["sharpe_hi"] - sharpe])
    bars = [colours[n] for n in table["strategy"]]
    bar_ax.barh(y, sharpe, xerr=np.nan_to_num(errors), color=bars)
    bar_ax.set_yticks(y, list(table["strategy"]), fontsize=8)
    bar_ax.axvline(0.0, color="black", linewidth=0.8)
    bar_ax.set_title("Net Sharpe ratio (95% bootstrap interval)", fontsize=10)
    bar_ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _png(fig)


def _horizon(result: BacktestResult) -> int:
    if result.config.horizon is not None:
        return int(result.config.horizon)
    return int(result.forecast["horizon"].min()) if len(result.forecast) else 1


def render_plots(result: BacktestResult) -> dict[str, bytes]:
    """Every plot as PNG bytes, by name (see PLOTS)."""
    makers = {
        "equity_curves": plot_equity_curves,
        "drawdowns": plot_drawdowns,
        "rolling_rank_ic": plot_rolling_rank_ic,
        "regime_bars": plot_regime_bars,
        "calibration_coverage": plot_calibration_coverage,
        "ensemble_weights": plot_ensemble_weights,
        "construction_comparison": plot_construction_comparison,
    }
    return {name: makers[name](result) for name in PLOTS}


# -- tables ----------------------------------------------------------------------------------

PERCENT = {
    "total_return",
    "annual_return",
    "annual_volatility",
    "max_drawdown",
    "hit_rate",
    "directional_accuracy",
    "directional_accuracy_lo",
    "directional_accuracy_hi",
    "chance_accuracy",
    "coverage",
    "interval_level",
    "psr",
    "deflated_sharpe",
}
INTEGER = {"n", "n_days", "n_dates", "horizon", "fold", "rebalances", "fallbacks"}


def _cell(column: str, value: Any) -> str:
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return "–" if math.isnan(value) else ("∞" if value > 0 else "-∞")
        if column in INTEGER:
            return f"{int(value):d}"
        if column in PERCENT:
            return f"{100 * value:.1f}%"
        if "ic" in column.split("_") and not column.endswith("_t"):
            return f"{value:.4f}"
        if column in ("mae", "rmse", "mse", "mean"):
            return f"{value:.3g}"
        return f"{value:.2f}"
    return str(value)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {c: [_cell(str(c), v) for v in frame[c]] for c in frame.columns}, index=frame.index
    )


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='note'>(none)</p>"
    shown = _display(frame)
    shown.columns = [str(c).replace("_", " ") for c in shown.columns]  # headers may wrap
    table = shown.to_html(index=False, escape=True, border=0, classes="metrics")
    return f"<div class='scroll'>{table}</div>"


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(none)_\n"
    shown = _display(frame)
    lines = [
        "| " + " | ".join(map(str, shown.columns)) + " |",
        "| " + " | ".join("---" for _ in shown.columns) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in shown.astype(str).to_numpy().tolist()]
    return "\n".join(lines) + "\n"


PERFORMANCE_COLUMNS = [
    "strategy",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sharpe_lo",
    "sharpe_hi",
    "gross_sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "profit_factor",
    "hit_rate",
    "turnover",
    "cost_drag",
    "psr",
    "deflated_sharpe",
]
CONSTRUCTION_COLUMNS = [
    "strategy",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sharpe_lo",
    "sharpe_hi",
    "gross_sharpe",
    "max_drawdown",
    "turnover",
    "rebalances",
    "fallbacks",
    "deflated_sharpe",
]
FORECAST_COLUMNS = [
    "model",
    "kind",
    "horizon",
    "rank_ic",
    "rank_ic_t",
    "rank_icir",
    "ic",
    "ic_t",
    "directional_accuracy",
    "directional_accuracy_lo",
    "directional_accuracy_hi",
    "chance_accuracy",
    "mae",
    "rmse",
]


def _regime_pivot(table: pd.DataFrame, series: str, value: str) -> pd.DataFrame:
    """name x (regime_type: regime) of 'value (t)' strings."""
    part = table[table["series"] == series]
    if part.empty:
        return pd.DataFrame()
    cells = [
        f"{_cell(value, v)} (t={_cell('t', t)}, n={int(n)})"
        for v, t, n in zip(part[value], part["t_stat"], part["n"], strict=True)
    ]
    part = part.assign(cell=cells, column=part["regime_type"] + ": " + part["regime"].astype(str))
    wide = part.pivot(index="name", columns="column", values="cell")
    return wide[list(dict.fromkeys(part["column"]))].reset_index()


def model_kind(model: str) -> str:
    """What a model in the report is: the stacked ensemble, a deep (PyTorch) or tabular
    learned family, a factor member, or a naive baseline."""
    family = model.split("@", 1)[0]
    if family == STACKED_ENSEMBLE:
        return "ensemble"
    if family in BASELINES:
        return "baseline"
    if family not in list_models():
        return "other"
    if is_pytorch_family(family):
        return "deep"
    return "factor" if family.endswith("_factor") else "tabular"


def _sections(result: BacktestResult) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, explanation, table) of every table the report shows."""
    perf = result.performance
    perf = perf.sort_values(["kind", "sharpe"], ascending=[True, False])
    forecast = result.forecast.assign(kind=result.forecast["model"].map(model_kind))
    forecast = forecast[[c for c in FORECAST_COLUMNS if c in forecast.columns]]
    stress = result.stress
    if len(stress):
        stress = stress[stress["series"] == "return"][
            ["regime", "name", "n", "total_return", "max_drawdown", "sharpe", "t_stat"]
        ].rename(columns={"regime": "window"})
    return [
        (
            "Portfolio performance",
            "Portfolios from the predictions, net of costs: each model's daily top-k book, and "
            "the ensemble's forecast of each horizon h also traded every h dates (every_h), "
            "in h overlapping tranches (tranches) and within a no-trade band (band). Sharpe "
            "with its stationary bootstrap interval (sharpe_lo, sharpe_hi), gross_sharpe "
            "before costs, turnover the mean daily traded fraction, cost_drag the annual "
            "return lost to costs, PSR = "
            "probability the true Sharpe exceeds 0, deflated_sharpe = PSR against the best "
            "Sharpe expected from all strategies tried by luck alone.",
            perf[[c for c in PERFORMANCE_COLUMNS if c in perf.columns]],
        ),
        (
            "Construction comparison",
            "Each construction method (target weights from the ensemble's forecasts and the "
            "risk model, rebalanced on its dates and drifting in between) beside the daily "
            "top-k book and the baselines of the same kind, net of costs; turnover is the "
            "mean daily traded fraction, fallbacks the rebalances where the method fell back "
            "to equal weights, deflated_sharpe deflated across these strategies.",
            result.constructions[
                [c for c in CONSTRUCTION_COLUMNS if c in result.constructions.columns]
            ],
        ),
        (
            "Forecast skill",
            "Mean daily cross-sectional rank IC and IC with t-stats (Hansen-Hodrick errors "
            "for overlapping labels); directional accuracy with a bootstrap interval beside "
            "the accuracy a skill-less call with the same up-shares would reach. kind says "
            "what each model is: deep (PyTorch) and tabular learned families, factor "
            "members, naive baselines and the stacked ensemble of the members.",
            forecast,
        ),
        (
            "Sharpe by regime",
            "Net Sharpe ratio per regime of the benchmark (regime known at the previous "
            "close), with the t-stat of the mean daily return and the number of days.",
            _regime_pivot(result.by_regime, "return", "sharpe"),
        ),
        (
            "Rank IC by regime",
            "Mean daily rank IC per regime, with its t-stat and the number of dates.",
            _regime_pivot(result.by_regime, "rank_ic", "mean"),
        ),
        (
            "Stress windows",
            "Named crises, where the test period spans them: "
            + "; ".join(f"{k} {a} to {b}" for k, (a, b) in STRESS_WINDOWS.items())
            + ". Returns labelled by their own date.",
            stress,
        ),
        (
            "Interval coverage",
            "Share of outcomes inside the prediction intervals.",
            result.coverage,
        ),
        (
            "Interval coverage by year",
            "The same per calendar year: split-conformal intervals hold their level when the "
            "recent past they are calibrated on resembles the year they cover.",
            _coverage_pivot(result.coverage_by_year),
        ),
        (
            "Replayed procedure",
            result.procedure or "Walk-forward folds.",
            result.folds,
        ),
        (
            "Decisions made on the research period",
            "Each family's inputs (training target, feature scaling, feature selection), "
            "compared on the research window only: fit on the first test fit's dates, scored "
            "by mean validation rank IC over the horizons (score, with its standard error), "
            "one axis at a time; a variant replaced the default only when it won by more than "
            "a standard error. The chosen rows are what every fold above and the served "
            "models used; the test period was scored once, with them. The stacker's "
            "shrinkage toward equal weights is chosen inside each fit by cross-validation "
            "on its own history (ensemble_weights.parquet); every portfolio schedule is "
            "reported, none selected, and the deflated Sharpe counts them all as trials.",
            _decision_log(result.decisions),
        ),
    ]


def _decision_log(decisions: pd.DataFrame) -> pd.DataFrame:
    return decisions[[c for c in DECISION_SUMMARY if c in decisions.columns]]


def _coverage_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Coverage by year as model/horizon rows and one column per year."""
    if table.empty:
        return table
    wide = table.pivot_table(index=["model", "horizon"], columns="year", values="coverage")
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


# -- writers ---------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table.metrics { border-collapse: collapse; font-size: 12px; margin: .5em 0 1em; }
table.metrics th, table.metrics td { padding: 3px 8px; border-bottom: 1px solid #e3e3e3;
       text-align: right; white-space: nowrap; }
table.metrics th { background: #f2f2f2; white-space: normal; vertical-align: bottom; }
.scroll { overflow-x: auto; }
table.metrics td:first-child, table.metrics th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0; }
.note { color: #555; font-size: 13px; }
.config { font-family: monospace; font-size: 12px; background: #f7f7f7; padding: .6em; }
"""

PLOT_TITLES = {
    "equity_curves": "Equity curves vs baselines",
    "drawdowns": "Drawdowns",
    "rolling_rank_ic": "Rolling rank IC",
    "regime_bars": "Performance by regime",
    "calibration_coverage": "Calibration and coverage",
    "ensemble_weights": "Ensemble weights over time",
    "construction_comparison": "Construction methods compared",
}


def _period(result: BacktestResult) -> str:
    index = result.daily_returns.index
    return f"{index.min().date()} to {index.max().date()}" if len(index) else "empty"


def render_html(result: BacktestResult, plots: dict[str, bytes], title: str) -> str:
    """The self-contained report page (plots embedded as base64 PNG)."""
    config = json.dumps(result.config_dict(), default=str)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Out-of-sample test period {_period(result)}. Every number is out of sample and "
        "beside naive baselines (dashed lines in the plots).</p>",
        f"<p class='config'>{html.escape(config)}</p>",
    ]
    sections = _sections(result)
    parts += [
        f"<h2>{html.escape(sections[0][0])}</h2>",
        f"<p class='note'>{html.escape(sections[0][1])}</p>",
        _html_table(sections[0][2]),
    ]
    for name in PLOTS:
        encoded = base64.b64encode(plots[name]).decode("ascii")
        parts += [
            f"<h2>{html.escape(PLOT_TITLES[name])}</h2>",
            f"<img alt='{html.escape(PLOT_TITLES[name])}' src='data:image/png;base64,{encoded}'>",
        ]
    for heading, note, table in sections[1:]:
        parts += [
            f"<h2>{html.escape(heading)}</h2>",
            f"<p class='note'>{html.escape(note)}</p>",
            _html_table(table),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_tables_markdown(result: BacktestResult, title: str) -> str:
    """The report's tables as Markdown: title, test period and every section."""
    lines = [f"# {title}", "", f"Out-of-sample test period {_period(result)}.", ""]
    for heading, note, table in _sections(result):
        lines += [f"## {heading}", "", note, "", _markdown_table(table)]
    return "\n".join(lines) + "\n"


def render_markdown(result: BacktestResult, plot_files: dict[str, str], title: str) -> str:
    """The Markdown summary: headline tables and links to the PNG files."""
    lines = [summary_tables_markdown(result, title), "## Plots", ""]
    lines += [f"![{PLOT_TITLES[name]}]({plot_files[name]})" for name in PLOTS]
    return "\n".join(lines) + "\n"


def _jsonable(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def write_report(
    result: BacktestResult,
    out_dir: str | os.PathLike[str],
    title: str = "finpipe backtest",
    plots: dict[str, bytes] | None = None,
) -> dict[str, Path]:
    """Write the HTML report, Markdown summary, PNG plots and metric tables into `out_dir`;
    returns the paths by name. `plots` (from `render_plots`) saves rendering them again."""
    out = Path(out_dir)
    plots = plots if plots is not None else render_plots(result)
    paths: dict[str, Path] = {}
    plot_files = {}
    for name, data in plots.items():
        plot_files[name] = f"plots/{name}.png"
        paths[f"plot_{name}"] = out / plot_files[name]
        atomic_write_bytes(paths[f"plot_{name}"], data)
    tables = result.tables()
    for name, frame in tables.items():
        paths[f"table_{name}"] = out / "metrics" / f"{name}.parquet"
        atomic_write_bytes(paths[f"table_{name}"], parquet_bytes(frame.reset_index(drop=True)))
    summary = {
        "title": title,
        "test_period": _period(result),
        "procedure": result.procedure,
        "config": result.config_dict(),
        **{
            k: _jsonable(tables[k])
            for k in (
                "performance",
                "constructions",
                "forecast",
                "by_regime",
                "stress",
                "coverage",
                "coverage_by_year",
            )
        },
    }
    paths["json"] = out / "metrics.json"
    atomic_write_bytes(paths["json"], json.dumps(summary, indent=1, default=str).encode())
    paths["markdown"] = out / "summary.md"
    atomic_write_bytes(paths["markdown"], render_markdown(result, plot_files, title).encode())
    paths["html"] = out / "report.html"
    atomic_write_bytes(paths["html"], render_html(result, plots, title).encode())
    return paths
