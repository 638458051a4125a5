"""Every family finds a planted signal, and none finds one in random walks.

Skill: on a panel with planted time-series momentum (signal_strength 0.1: next-day
idiosyncratic returns correlate 0.1 with the sum of the last 20 shocks, which the trailing
20-day return reveals, so a linear model can find it) every family's validation rank IC
at the 1-day horizon is above 3 standard errors and above 0.02. A factor member's ranking
is not learned, so its column carries the planted signal (`with_factor_columns`): the test
is that it trades its column the right way round and states it as a forecast.

Chance: on a zero-strength panel every family's out-of-sample rank IC and directional
accuracy stay within 3 standard errors of chance (0 and 0.5) at every horizon. Standard
errors come from the per-date values (Hansen-Hodrick with horizon - 1 lags for overlapping
labels; `test_metrics` checks that its z-scores are calibrated). Seeds are fixed, so the
outcome is reproducible.
"""

from __future__ import annotations

import pytest
import torch

from finpipe.core.metrics import forecast_metrics
from finpipe.models import PanelData, create_model, list_models, model_class, time_split
from finpipe.models.sequence import SequenceForecaster
from finpipe_tests.synthetic_model_data import model_frames, with_factor_columns

torch.set_num_threads(1)

SEQUENCE = {
    "hidden_size": 16,
    "window": 10,
    "samples_per_epoch": 4096,
    "valid_samples": 4096,
    "lr": 3e-3,
}
PARAMS = {
    "lstm": SEQUENCE,
    "gru": SEQUENCE,
    "transformer": {**SEQUENCE, "num_layers": 1},
    "cnn_lstm": SEQUENCE,
    "tft": SEQUENCE,
    "ridge": {},
    "elastic_net": {},
    "random_forest": {"n_estimators": 30, "max_samples": 5000},
    "hist_gbm": {"max_iter": 100},
    "momentum_factor": {},
    "reversal_factor": {},
    "low_vol_factor": {},
}
SKILL_EPOCHS, CHANCE_EPOCHS = 4, 2


def _params(name: str, epochs: int) -> dict:
    neural = issubclass(model_class(name), SequenceForecaster)
    return {**PARAMS[name], **({"max_epochs": epochs} if neural else {})}


@pytest.fixture(scope="module")
def planted() -> tuple[PanelData, PanelData]:
    features, labels = model_frames(n_tickers=30, n_days=900, seed=11, signal_strength=0.1)
    features = with_factor_columns(features)
    return time_split(PanelData.from_frames(features, labels), valid_fraction=0.4)


@pytest.fixture(scope="module")
def random_walk() -> tuple[PanelData, PanelData, PanelData]:
    features, labels = model_frames(n_tickers=30, n_days=1300, seed=12, signal_strength=0.0)
    features = with_factor_columns(features)
    rest, test = time_split(PanelData.from_frames(features, labels), valid_fraction=0.5)
    train, valid = time_split(rest, valid_fraction=0.3)
    return train, valid, test


@pytest.mark.parametrize("name", list_models())
def test_finds_planted_signal(name: str, planted: tuple[PanelData, PanelData]) -> None:
    train, valid = planted
    model = create_model(name, **_params(name, SKILL_EPOCHS)).fit(train, valid)
    ric, se = model.metrics["rank_ic_h1"], model.metrics["rank_ic_se_h1"]
    assert ric > max(3 * se, 0.02), f"{name}: validation rank IC {ric:.4f} (se {se:.4f})"


@pytest.mark.parametrize("name", list_models())
def test_random_walks_score_like_a_coin(
    name: str, random_walk: tuple[PanelData, PanelData, PanelData]
) -> None:
    train, valid, test = random_walk
    model = create_model(name, **_params(name, CHANCE_EPOCHS)).fit(train, valid)
    predictions = model.predict(test)
    table = forecast_metrics(
        predictions.merge(test.labels_frame(), on=["date", "ticker", "horizon"], how="inner")
    )
    assert list(table.index) == [1, 5, 20]
    assert (table["n_dates"] >= 600).all()
    for horizon, row in table.iterrows():
        ic_z = row["rank_ic"] / row["rank_ic_se"]
        da_z = (row["directional_accuracy"] - 0.5) / row["directional_accuracy_se"]
        assert abs(ic_z) < 3, f"{name} h{horizon}: rank IC {row['rank_ic']:.4f} is {ic_z:.1f} se"
        assert abs(da_z) < 3, (
            f"{name} h{horizon}: directional accuracy {row['directional_accuracy']:.4f} "
            f"is {da_z:.1f} se from 0.5"
        )
