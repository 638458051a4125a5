"""Predictions Parquet: the exact schema (dtypes included) read back with plain pandas and
pyarrow, clear errors for bad frames (a model trained after the date it predicts among
them), served rows with hand-worked conformal intervals and confidence, and a prediction
history that is partitioned by date, idempotent per date, and fills realised returns once
they are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from finpipe.core.contracts import (
    PREDICTION_HISTORY,
    PREDICTIONS,
    REPLAY,
    ContractError,
    conform,
    schema_violations,
)
from finpipe.core.storage import ParquetStore
from finpipe.core.time_plan import FitWindow
from finpipe.forecasting.predictions import (
    fill_realised,
    history_dates,
    read_prediction_history,
    read_predictions,
    write_prediction_history,
    write_predictions,
)
from finpipe.forecasting.system import EnsembleFit, forecast_rows
from finpipe.forecasting.uncertainty import SplitConformal

TICKERS = ["AAA", "BBB", "CCC"]
MODELS = ["ensemble", "lstm", "ridge"]


def _predictions(date: str, shift: float = 0.0) -> pd.DataFrame:
    """A loosely typed predictions frame (object tickers, int32 horizons) for one date."""
    n = len(TICKERS) * 2 * len(MODELS)
    rng = np.random.default_rng(0)
    prediction = rng.normal(0, 0.01, n) + shift
    return pd.DataFrame(
        {
            "date": date,
            "ticker": np.repeat(np.array(TICKERS, dtype=object), 2 * len(MODELS)),
            "horizon": np.tile(np.repeat(np.array([1, 5], np.int32), len(MODELS)), len(TICKERS)),
            "model": np.tile(MODELS, len(TICKERS) * 2),
            "prediction": prediction,
            "lower": prediction - 0.02,
            "upper": prediction + 0.02,
            "interval_level": 0.8,
            "confidence": 0.1,
            "model_version": "v1",
            "trained_through": pd.Timestamp(date) - pd.Timedelta(days=7),
        }
    )


def test_written_predictions_match_the_schema_exactly(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    path = write_predictions(store, _predictions("2024-01-02"), metadata={"picp_h1": "0.8"})
    assert pq.read_schema(path).remove_metadata() == PREDICTIONS.arrow_schema()
    plain = pd.read_parquet(path)
    assert {c: str(t) for c, t in plain.dtypes.items()} == PREDICTIONS.required
    assert schema_violations(plain, PREDICTIONS) == []
    pd.testing.assert_frame_equal(plain, read_predictions(store))
    arrow = pq.read_table(path).to_pandas()
    assert list(arrow.columns) == list(PREDICTIONS.required)
    assert store.read_metadata("predictions", "latest") == {"picp_h1": "0.8"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="confidence"), "missing columns \\['confidence'\\]"),
        (lambda f: f.assign(extra=1), "unknown columns \\['extra'\\]"),
        (lambda f: f.assign(lower=f["upper"] + 1), "lower > upper"),
        (lambda f: f.assign(confidence=1.5), "confidence must be in \\[0, 1\\]"),
        (lambda f: f.assign(interval_level=80.0), "interval_level must be in \\(0, 1\\)"),
        (lambda f: f.assign(horizon=1.5), "'horizon' is not int64"),
        (lambda f: f.assign(prediction=np.nan), "prediction must be finite"),
        (lambda f: f.assign(model_version=None), "missing model_version"),
        (lambda f: f.assign(trained_through=pd.NaT), "missing trained_through"),
        (lambda f: f.drop(columns="trained_through"), "missing columns \\['trained_through'\\]"),
        (
            lambda f: f.assign(
                trained_through=pd.Timestamp(f["date"].iloc[0]) + pd.Timedelta(1, "D")
            ),
            "trained_through after the prediction date",
        ),
        (lambda f: pd.concat([f, f.head(1)]), "1 duplicate"),
    ],
)
def test_bad_predictions_are_refused_with_a_reason(change, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        conform(change(_predictions("2024-01-02")), PREDICTIONS)


def test_violations_report_wrong_dtypes() -> None:
    frame = conform(_predictions("2024-01-02"), PREDICTIONS)
    assert schema_violations(frame.astype({"horizon": "int32"}), PREDICTIONS) == [
        "column 'horizon' has dtype int32, expected int64"
    ]
    assert "columns are" in schema_violations(frame[frame.columns[::-1]], PREDICTIONS)[0]


def _fit(members: tuple[str, ...], conformal: SplitConformal | None) -> EnsembleFit:
    """A hand-made ensemble fit: equal weights (no stacker) and the given intervals."""
    day = pd.Timestamp("2024-01-02")
    window = FitWindow(
        name="fold_20240102",
        as_of=day,
        label_cutoff=day,
        train_start=pd.Timestamp("2023-01-02"),
        fit_end=pd.Timestamp("2023-11-30"),
        valid_start=pd.Timestamp("2023-12-01"),
        valid_end=pd.Timestamp("2023-12-20"),
        stack_start=pd.Timestamp("2023-06-01"),
        calibration_start=pd.Timestamp("2023-09-01"),
        trained_through=pd.Timestamp("2023-12-29"),
        predict_start=day,
        predict_end=None,
    )
    return EnsembleFit(window, members, (0.8,), stack=None, conformal=conformal)


def test_served_rows_from_conformal_intervals() -> None:
    rows = conform(_predictions("2024-01-02"), PREDICTIONS)
    point = rows[["date", "ticker", "horizon", "model", "prediction"]]
    members = point[point["model"] != "ensemble"]
    scale = point[["date", "ticker", "horizon"]].drop_duplicates().assign(horizon_vol=0.02)
    scale["scale"] = 0.02
    versions = dict.fromkeys(MODELS, "v7")
    through = {"lstm": pd.Timestamp("2023-12-22"), "ridge": pd.Timestamp("2023-12-29")}
    # Three calibration rows per (model, horizon) cannot support an 80% level:
    # ceil(4 * 0.8) = 4 > 3, so the interval is unbounded and the confidence 0.
    calibration = point.assign(fwd_return=point["prediction"] + 0.01, scale=0.02)
    conformal = SplitConformal(levels=(0.8,)).fit(calibration)
    fit = _fit(("lstm", "ridge"), conformal)
    table = forecast_rows(members, scale, fit, 0.8, versions, through, fold="fold_20240102")
    assert np.isinf(table[["lower", "upper"]]).all().all() and (table["confidence"] == 0).all()
    # No calibration at all (the first fold): unbounded too, and said to be at 80%.
    table = forecast_rows(
        members, scale, _fit(("lstm", "ridge"), None), 0.8, versions, through, "f"
    )
    assert np.isinf(table[["lower", "upper"]]).all().all() and (table["confidence"] == 0).all()
    assert (table["interval_level"] == 0.8).all()
    # Ten times as many rows, every score 0.5: q = 0.5, width 2 * 0.5 * 0.02.
    conformal = SplitConformal(levels=(0.8,)).fit(pd.concat([calibration] * 10))
    fit = _fit(("lstm", "ridge"), conformal)
    table = forecast_rows(members, scale, fit, 0.8, versions, through, fold="fold_20240102")
    assert schema_violations(table, REPLAY) == []
    assert schema_violations(table[list(PREDICTIONS.required)], PREDICTIONS) == []
    assert sorted(table["model"].unique()) == MODELS and len(table) == len(point)
    np.testing.assert_allclose(table["upper"] - table["lower"], 0.02)
    expected = 1 / (1 + 0.02 / (2 * 1.2815515655446004 * 0.02))
    np.testing.assert_allclose(table["confidence"], expected)
    # Equal weights without a stacker; the ensemble is as current as its oldest member.
    ensemble = table[table["model"] == "ensemble"].set_index(["ticker", "horizon"])
    mean = members.groupby(["ticker", "horizon"])["prediction"].mean()
    np.testing.assert_allclose(ensemble["prediction"], mean.reindex(ensemble.index))
    got = table.groupby("model")["trained_through"].unique().map(list).to_dict()
    assert got == {
        "ensemble": [pd.Timestamp("2023-12-22")],
        "lstm": [pd.Timestamp("2023-12-22")],
        "ridge": [pd.Timestamp("2023-12-29")],
    }
    assert (table["fold"] == "fold_20240102").all() and (table["model_version"] == "v7").all()
    with pytest.raises(
        ValueError, match="no model_version or trained_through for models \\['ridge'\\]"
    ):
        forecast_rows(members, scale, fit, 0.8, {"ensemble": "v", "lstm": "v"}, through, "f")
    # A model trained through a date after the one it predicts is refused.
    late = {**through, "ridge": pd.Timestamp("2024-01-03")}
    with pytest.raises(ContractError, match="trained_through after the prediction date"):
        forecast_rows(members, scale, fit, 0.8, versions, late, fold="fold_20240102")


def _labels(date: str, label_end: str, value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Timestamp(date),
            "ticker": TICKERS,
            "horizon": np.int64(1),
            "fwd_return": value,
            "label_end": pd.Timestamp(label_end),
        }
    )


def test_history_is_idempotent_per_date(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    write_prediction_history(store, _predictions("2024-01-02"))
    write_prediction_history(store, _predictions("2024-01-02", shift=1.0))  # rerun the day
    write_prediction_history(store, _predictions("2024-01-03"))
    assert history_dates(store) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]
    files = sorted(p.name for p in (tmp_path / "predictions" / "history").iterdir())
    assert files == ["date=2024-01-02.parquet", "date=2024-01-03.parquet"]
    history = read_prediction_history(store)
    assert len(history) == 2 * len(_predictions("2024-01-02"))
    assert not history.duplicated(["date", "ticker", "horizon", "model"]).any()
    day = history[history["date"] == "2024-01-02"]
    assert (day["prediction"] > 0.5).all()  # the rerun replaced the first run
    plain = pd.read_parquet(tmp_path / "predictions" / "history")
    assert {c: str(t) for c, t in plain.dtypes.items()} == PREDICTION_HISTORY.required
    assert len(plain) == len(history)
    path = tmp_path / "predictions" / "history" / "date=2024-01-03.parquet"
    assert pq.read_schema(path).remove_metadata() == PREDICTION_HISTORY.arrow_schema()
    assert len(read_prediction_history(store, start="2024-01-03")) == len(history) // 2
    empty = read_prediction_history(ParquetStore(str(tmp_path / "none")))
    assert (
        empty.empty and {c: str(t) for c, t in empty.dtypes.items()} == PREDICTION_HISTORY.required
    )


def test_fill_realised_once_known(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    write_prediction_history(store, _predictions("2024-01-02"))
    write_prediction_history(store, _predictions("2024-01-03"))
    labels = pd.concat(
        [_labels("2024-01-02", "2024-01-03", 0.01), _labels("2024-01-03", "2024-01-04", 0.02)]
    )
    # As of 2024-01-03 only the first date's 1-day labels have ended.
    assert fill_realised(store, labels, as_of="2024-01-03") == len(TICKERS) * len(MODELS)
    history = read_prediction_history(store)
    filled = history.dropna(subset=["realised_return"])
    assert set(filled["date"]) == {pd.Timestamp("2024-01-02")} and set(filled["horizon"]) == {1}
    assert (filled["realised_return"] == 0.01).all()
    assert fill_realised(store, labels, as_of="2024-01-03") == 0  # nothing new: no rewrite
    # Rerunning a filled day keeps its realised returns.
    write_prediction_history(store, _predictions("2024-01-02", shift=1.0))
    again = read_prediction_history(store, end="2024-01-02")
    assert again["realised_return"].notna().sum() == len(filled)
    assert fill_realised(store, labels) == len(TICKERS) * len(MODELS)
    five_day = _labels("2024-01-02", "2024-01-09", 0.05).assign(horizon=np.int64(5))
    assert fill_realised(store, five_day) == len(TICKERS) * len(MODELS)
    meta = store.read_metadata("predictions", "history", "date=2024-01-02")
    assert meta["complete"] == "true"
