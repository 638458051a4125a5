"""Walk-forward splits purge and embargo by label_end; folds run independently and cover the
whole test period once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.evaluation.walk_forward import (
    Fold,
    check_purged,
    collect,
    equal_weight_combine,
    fold_views,
    label_end_by_date,
    run_fold,
    run_walk_forward,
    validation_weighted_combiner,
    walk_forward_splits,
)
from finpipe.features.labels import forward_returns
from finpipe.models.base import LeakageError
from finpipe.models.panel_data import PanelData
from finpipe.models.registry import create_model


def _calendar(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2010-01-04", periods=n)


def _label_end(calendar: pd.DatetimeIndex, reach: int) -> pd.Series:
    """Label of date i ends at date i + reach; the last `reach` dates have no label."""
    ends = pd.Series(pd.NaT, index=calendar, dtype="datetime64[ns]")
    ends.iloc[: len(calendar) - reach] = calendar[reach:]
    return ends


def _frames(n_tickers: int = 8, n_days: int = 220, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    prices = synthetic_panel(
        SyntheticConfig(n_tickers=n_tickers, n_days=n_days, seed=seed, signal_strength=0.3)
    )
    close = prices.pivot(index="date", columns="ticker", values="adj_close")
    log_close = np.log(close)
    features = pd.DataFrame(
        {
            "ret_5": (log_close - log_close.shift(5)).stack(),
            "ret_20": (log_close - log_close.shift(20)).stack(),
        }
    ).reset_index()
    labels = forward_returns(prices, (1, 5), execution_lag=1)
    return prices, features, labels


def test_splits_hand_worked() -> None:
    # 40 dates; labels of date i end at date i + 6 (execution lag 1, horizon 5).
    calendar = _calendar(40)
    folds = walk_forward_splits(
        calendar,
        _label_end(calendar, 6),
        first_test=calendar[20],
        retrain_every=5,
        embargo=2,
        min_train_days=5,
    )
    assert [f.test_start for f in folds] == list(calendar[[20, 25, 30, 35]])
    first = folds[0]
    # Cutoff = the date 2 before the test: labels must end before calendar[18], i.e. at
    # calendar[17] at the latest, so training dates are calendar[0..11].
    assert first.label_cutoff == calendar[18]
    assert list(first.train_dates) == list(calendar[:12])
    assert list(first.test_dates) == list(calendar[20:25])
    assert list(folds[-1].test_dates) == list(calendar[35:40])
    assert list(folds[1].train_dates) == list(calendar[:17])  # expanding


def test_rolling_window_keeps_the_last_train_days() -> None:
    calendar = _calendar(60)
    folds = walk_forward_splits(
        calendar,
        _label_end(calendar, 2),
        first_test=calendar[30],
        retrain_every=10,
        window="rolling",
        train_days=15,
        embargo=0,
        min_train_days=10,
    )
    for fold in folds:
        start = calendar.get_loc(fold.test_start)
        # Dates start-15 .. start-1, less the two whose labels reach the test period.
        assert list(fold.train_dates) == list(calendar[start - 15 : start - 2])


def test_default_first_test_is_the_earliest_with_enough_training() -> None:
    calendar = _calendar(100)
    folds = walk_forward_splits(calendar, _label_end(calendar, 3), min_train_days=50, embargo=1)
    assert len(folds[0].train_dates) == 50
    assert folds[0].test_start == calendar[54]


def test_bad_settings_are_refused() -> None:
    calendar = _calendar(50)
    ends = _label_end(calendar, 2)
    with pytest.raises(ValueError, match="fewer than min_train_days"):
        walk_forward_splits(calendar, ends, first_test=calendar[10], min_train_days=20)
    with pytest.raises(ValueError, match="train_days"):
        walk_forward_splits(calendar, ends, first_test=calendar[30], window="rolling")
    with pytest.raises(ValueError, match="retrain_every"):
        walk_forward_splits(calendar, ends, first_test=calendar[30], retrain_every=0)


@settings(max_examples=150, deadline=None)
@given(
    n_dates=st.integers(30, 160),
    reach=st.integers(1, 25),
    retrain_every=st.integers(1, 30),
    embargo=st.integers(0, 10),
    rolling=st.booleans(),
    train_days=st.integers(5, 60),
    first=st.floats(0.3, 0.9),
    holes=st.lists(st.integers(0, 159), max_size=10),
)
def test_purging_property(
    n_dates: int,
    reach: int,
    retrain_every: int,
    embargo: int,
    rolling: bool,
    train_days: int,
    first: float,
    holes: list[int],
) -> None:
    calendar = _calendar(n_dates)
    ends = _label_end(calendar, reach)
    ends.iloc[[h for h in holes if h < n_dates]] = pd.NaT  # dates without labels
    first_test = calendar[int(first * (n_dates - 1))]
    try:
        folds = walk_forward_splits(
            calendar,
            ends,
            first_test=first_test,
            retrain_every=retrain_every,
            window="rolling" if rolling else "expanding",
            train_days=train_days,
            embargo=embargo,
            min_train_days=1,
        )
    except ValueError as error:
        assert "min_train_days" in str(error)
        return
    tested = pd.DatetimeIndex(np.concatenate([f.test_dates for f in folds]))
    assert list(tested) == list(calendar[calendar >= first_test])  # each test date once
    for fold in folds:
        start = calendar.get_loc(fold.test_start)
        train_ends = ends.reindex(fold.train_dates)
        assert train_ends.notna().all()
        assert (train_ends < fold.test_start).all()  # no label reaches the test period
        assert fold.label_cutoff == calendar[max(start - embargo, 0)]
        assert (train_ends < fold.label_cutoff).all()  # nor the embargo before it
        assert (fold.train_dates < fold.test_start).all()
        assert len(fold.test_dates) <= retrain_every
        if rolling:
            assert (fold.train_dates >= calendar[max(start - embargo - train_days, 0)]).all()


def test_no_training_row_label_ends_on_or_after_its_first_test_date() -> None:
    _, features, labels = _frames()
    # One ticker lost its last prices early: its labels end later than other tickers' of the
    # same date would, so row-level purging matters, not just date-level.
    late = labels["ticker"] == labels["ticker"].iloc[0]
    labels.loc[late, "label_end"] = labels.loc[late, "label_end"] + pd.Timedelta(days=20)
    panel = PanelData.from_frames(features, labels)
    folds = walk_forward_splits(
        panel.dates, label_end_by_date(labels), retrain_every=30, embargo=0, min_train_days=60
    )
    for fold in folds:
        train, test = fold_views(fold, panel)
        ends = train.label_end[train.sample_mask]
        assert len(ends) > 0
        assert ends.max() < fold.test_start.value
        assert set(test.sample_dates()) == set(fold.test_dates)


def test_check_purged_catches_a_leaking_view() -> None:
    _, features, labels = _frames()
    panel = PanelData.from_frames(features, labels)
    calendar = panel.dates
    fold = Fold(0, calendar[:100], calendar[100:120], calendar[100])
    leaking = panel.view(np.isin(panel.dates, calendar[:100])[:, None])
    with pytest.raises(LeakageError, match="on or after the cutoff"):
        check_purged(fold, leaking)


def test_walk_forward_predicts_every_test_date_once_per_model() -> None:
    _, features, labels = _frames()
    panel = PanelData.from_frames(features, labels)
    folds = walk_forward_splits(
        panel.dates, label_end_by_date(labels), retrain_every=40, min_train_days=60
    )
    models = {
        "ridge": {"family": "ridge", "alpha": 1.0},
        "ridge_strong": lambda: create_model("ridge", alpha=1000.0),
    }
    result = run_walk_forward(panel, models, folds)
    preds = result.predictions
    assert set(preds["model"]) == {"ridge", "ridge_strong", STACKED_ENSEMBLE}
    assert not preds.duplicated(["date", "ticker", "horizon", "model"]).any()
    test_dates = pd.DatetimeIndex(np.concatenate([f.test_dates for f in folds]))
    for _, part in preds.groupby("model"):
        assert set(part["date"]) == set(test_dates)
        assert len(part) == len(test_dates) * len(panel.tickers) * 2
    wide = preds.pivot_table(
        index=["date", "ticker", "horizon"], columns="model", values="prediction"
    )
    mean = (wide["ridge"] + wide["ridge_strong"]) / 2
    np.testing.assert_allclose(wide[STACKED_ENSEMBLE], mean, rtol=1e-6)
    assert set(result.weights["weight"]) == {0.5}
    assert set(result.validation["model"]) == {"ridge", "ridge_strong"}
    # Folds are independent: running them apart and collecting gives the same predictions.
    apart = collect([run_fold(f, panel, models) for f in reversed(folds)])
    pd.testing.assert_frame_equal(apart.predictions, preds)


def test_a_custom_combiner_plugs_in() -> None:
    _, features, labels = _frames()
    panel = PanelData.from_frames(features, labels)
    fold = walk_forward_splits(
        panel.dates, label_end_by_date(labels), retrain_every=50, min_train_days=60
    )[0]

    def first_member(members: pd.DataFrame, validation: object) -> tuple[pd.DataFrame, ...]:
        chosen = members[members["model"] == "a"].drop(columns="model")
        return chosen, pd.DataFrame({"horizon": [1, 5], "model": "a", "weight": 1.0})

    out = run_fold(fold, panel, {"a": {"family": "ridge"}, "b": {"family": "ridge"}}, first_member)
    ensemble = out.predictions[out.predictions["model"] == STACKED_ENSEMBLE]
    member = out.predictions[out.predictions["model"] == "a"]
    np.testing.assert_allclose(ensemble["prediction"], member["prediction"])
    assert (out.weights["test_start"] == fold.test_start).all()
    none = run_fold(fold, panel, {"a": {"family": "ridge"}}, combine=None)
    assert set(none.predictions["model"]) == {"a"}


def _members() -> pd.DataFrame:
    day = pd.Timestamp("2020-01-02")
    return pd.DataFrame(
        {
            "date": day,
            "ticker": ["X", "X", "Y", "Y"],
            "horizon": 1,
            "model": ["a", "b", "a", "b"],
            "prediction": [1.0, 3.0, -2.0, 2.0],
        }
    )


def test_validation_weighted_combiner_hand_worked() -> None:
    combine = validation_weighted_combiner(floor=0.0)
    validation = {"a": {"rank_ic_h1": 0.03}, "b": {"rank_ic_h1": 0.01}}
    ensemble, weights = combine(_members(), validation)
    # Weights 0.75 / 0.25: X -> 0.75 * 1 + 0.25 * 3 = 1.5, Y -> -1.5 + 0.5 = -1.0.
    np.testing.assert_allclose(ensemble["prediction"], [1.5, -1.0])
    np.testing.assert_allclose(weights.set_index("model")["weight"], [0.75, 0.25])
    assert list(ensemble.columns) == ["date", "ticker", "horizon", "prediction"]
    # No member with positive validation IC: equal weights, as the plain mean.
    bad = {"a": {"rank_ic_h1": -0.1}, "b": {"rank_ic_h1": -0.2}}
    ensemble, _ = combine(_members(), bad)
    equal, _ = equal_weight_combine(_members(), {})
    np.testing.assert_allclose(ensemble["prediction"], equal["prediction"])
