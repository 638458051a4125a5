"""PNG plots of target portfolios for the asset metadata: weights per method, and their
VaR and CVaR. matplotlib's Agg backend, imported only when a plot is drawn."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def weights_png(weights: pd.DataFrame) -> bytes:
    """Grouped bars of `weights` (tickers x methods)."""
    plt, fig, ax = _figure(max(8.0, 0.45 * len(weights) + 2), 4.0)
    width = 0.8 / max(weights.shape[1], 1)
    x = np.arange(len(weights))
    for i, method in enumerate(weights.columns):
        ax.bar(x + (i - (weights.shape[1] - 1) / 2) * width, weights[method], width, label=method)
    ax.set_xticks(x, list(weights.index), rotation=60, fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel("weight")
    ax.set_title("Target weights by construction method")
    ax.legend(fontsize=8, ncol=min(weights.shape[1], 5))
    ax.grid(alpha=0.3, axis="y")
    return _png(plt, fig)


def risk_png(report: pd.DataFrame) -> bytes:
    """VaR and CVaR (1-day and 10-day, both levels, each model) per method, in percent."""
    plt, fig, ax = _figure(11.0, 4.2)
    table = report.assign(
        label=report["measure"].str.upper()
        + " "
        + report["model"]
        + " "
        + report["horizon_days"].astype(str)
        + "d "
        + (100 * report["level"]).round().astype(int).astype(str)
        + "%"
    ).pivot_table(index="label", columns="method", values="value", sort=False)
    width = 0.8 / max(table.shape[1], 1)
    x = np.arange(len(table))
    for i, method in enumerate(table.columns):
        offset = (i - (table.shape[1] - 1) / 2) * width
        ax.bar(x + offset, 100 * table[method], width, label=method)
    ax.set_xticks(x, list(table.index), rotation=70, fontsize=7)
    ax.set_ylabel("loss, % of capital")
    ax.set_title("VaR and CVaR of the target portfolios")
    ax.legend(fontsize=8, ncol=min(table.shape[1], 5))
    ax.grid(alpha=0.3, axis="y")
    return _png(plt, fig)
