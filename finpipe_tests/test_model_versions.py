"""Model versions in a real (local SQLite) MLflow registry: a training becomes an immutable
version, the champion/challenger rule against hand-computed statistics, shadow predictions
of a challenger, and rollback by moving the alias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.core.time_plan import FitWindow
from finpipe.forecasting.system import EnsembleFit, load_served, publish_ensemble, serve
from finpipe.forecasting.uncertainty import SplitConformal
from finpipe.models import PanelData
from finpipe.models.trainer import train_family, window_views
from finpipe.models.versions import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    challenger_model,
    compare_on_window,
    load_version,
    publish_training,
    settle_challenger,
)
from finpipe_tests.synthetic_model_data import fit_window, model_frames


def test_compare_on_window_against_spearman_by_hand() -> None:
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2024-01-01", periods=30)
    tickers = [f"T{i}" for i in range(6)]
    keys = pd.MultiIndex.from_product([dates, tickers, [1]], names=["date", "ticker", "horizon"])
    labels = keys.to_frame(index=False).assign(fwd_return=rng.normal(size=len(keys)))
    rows = labels[["date", "ticker", "horizon"]]
    good = rows.assign(prediction=labels["fwd_return"] + rng.normal(0, 0.5, len(keys)))
    bad = rows.assign(prediction=rng.normal(size=len(keys)))
    by_date = {
        name: frame.set_index("date")["prediction"] for name, frame in (("g", good), ("b", bad))
    }
    outcome = labels.set_index("date")["fwd_return"]
    daily = [
        stats.spearmanr(by_date["g"][d], outcome[d])[0]
        - stats.spearmanr(by_date["b"][d], outcome[d])[0]
        for d in dates
    ]
    t_by_hand = np.mean(daily) / (np.std(daily, ddof=1) / np.sqrt(len(daily)))
    keep = compare_on_window(bad, good, labels, min_dates=20)
    assert not keep.promote and "significantly worse" in keep.reason
    assert keep.n_dates == 30 and keep.t_stat == pytest.approx(-t_by_hand)
    assert keep.difference == pytest.approx(-np.mean(daily))
    promote = compare_on_window(good, bad, labels, min_dates=20)
    assert promote.promote and promote.t_stat == pytest.approx(t_by_hand)
    few = compare_on_window(bad, good, labels, min_dates=31)
    assert few.promote and "no evidence" in few.reason


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> ModelRegistry:
    return ModelRegistry.local(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def panel() -> PanelData:
    features, labels = model_frames(n_tickers=20, n_days=800, seed=2, signal_strength=0.3)
    return PanelData.from_frames(features, labels, horizons=(1, 5))


def train(panel: PanelData, w: FitWindow, negate: bool = False):
    data = panel if not negate else PanelData(**{**panel.__dict__, "targets": -panel.targets})
    fit, tail = window_views(data, w)
    return train_family("ridge", fit, tail, {"alpha": 1.0})


def test_versions_champion_challenger_shadow_and_rollback(
    registry: ModelRegistry, panel: PanelData
) -> None:
    first = fit_window(panel, 300, 400, "serving")
    v1, run_id = publish_training(
        registry, "ridge", train(panel, first), first, {"code_version": "a"}
    )
    assert v1.uri == "models:/finpipe-ridge/1" and v1.tags["trained_through"] == str(
        first.trained_through.date()
    )
    assert settle_challenger(registry, "ridge", v1, panel, min_dates=20).promote
    assert registry.by_alias("ridge", CHAMPION).version == "1"
    assert "rank_ic_h1" in registry.client.get_run(run_id).data.metrics

    # A retrain on anti-signal, compared on the dates after the champion's last training
    # date within the new version's early-stopping tail (positions 471..600, 130 dates):
    # significantly worse, so it is kept as the challenger.
    later = fit_window(panel, 450, 600, "serving")
    v2, _ = publish_training(registry, "ridge", train(panel, later, negate=True), later, {})
    verdict = settle_challenger(registry, "ridge", v2, panel, min_dates=20)
    assert not verdict.promote and verdict.n_dates == 130 and verdict.t_stat < -1.645
    assert registry.by_alias("ridge", CHAMPION).version == "1"
    assert registry.by_alias("ridge", CHALLENGER).version == "2"

    # Both serve: the challenger's rows shadow the champion with the family's intervals.
    conformal = SplitConformal(levels=(0.8,))
    rows = pd.DataFrame(
        {
            "model": ["ridge", STACKED_ENSEMBLE] * 10,
            "horizon": 1,
            "prediction": 0.0,
            "fwd_return": np.tile(np.linspace(-0.05, 0.05, 10), 2),
            "scale": 0.01,
        }
    )
    rows = pd.concat([rows, rows.assign(horizon=5)])
    fit = EnsembleFit(later, ("ridge",), (0.8,), None, conformal.fit(rows))
    publish_ensemble(registry, fit, {})
    served = load_served(registry, ["ridge"])
    assert served.versions[challenger_model("ridge")] == "models:/finpipe-ridge/2"
    vol = pd.DataFrame({"date": panel.dates[650], "ticker": panel.tickers, "recent_vol": 0.01})
    table = serve(
        served.champions,
        served.challengers,
        panel.select(panel.dates[650], panel.dates[650]),
        vol,
        served.ensemble,
        0.8,
        served.versions,
        served.trained_through,
    )
    assert set(table["model"]) == {"ridge", "ridge@challenger", STACKED_ENSEMBLE}
    shadow = table[table["model"] == "ridge@challenger"].set_index(["ticker", "horizon"])
    champ = table[table["model"] == "ridge"].set_index(["ticker", "horizon"])
    np.testing.assert_allclose(
        (shadow["upper"] - shadow["lower"]).to_numpy(), (champ["upper"] - champ["lower"]).to_numpy()
    )
    ensemble = table[table["model"] == STACKED_ENSEMBLE].set_index(["ticker", "horizon"])
    np.testing.assert_allclose(ensemble["prediction"], champ["prediction"])  # shadows stay out

    # Rollback and forward are alias moves; every version stays loadable.
    registry.set_alias("ridge", CHAMPION, "2")
    assert load_served(registry, ["ridge"]).versions["ridge"] == "models:/finpipe-ridge/2"
    registry.set_alias("ridge", CHAMPION, "1")
    assert [v.version for v in registry.versions("ridge")] == ["1", "2"]
    assert load_version(registry, registry.version("models:/finpipe-ridge/2")).horizons == (1, 5)
