"""PanelData construction, purged/embargoed time splits, train-only scaling, lazy windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from finpipe.models import (
    LeakageError,
    PanelData,
    PanelDataError,
    create_model,
    panel_data,
    time_split,
)
from finpipe.models.panel_data import FeatureScaler, TargetScaler, panel_fingerprint
from finpipe.models.windows import window_dataset
from finpipe_tests.synthetic_model_data import FEATURES, model_frames

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return model_frames(n_tickers=6, n_days=160, seed=3)


@pytest.fixture(scope="module")
def panel(frames: tuple[pd.DataFrame, pd.DataFrame]) -> PanelData:
    return PanelData.from_frames(*frames)


def test_dense_arrays_match_long_frames(
    frames: tuple[pd.DataFrame, pd.DataFrame], panel: PanelData
) -> None:
    features, labels = frames
    assert panel.features.shape == (160, 6, len(FEATURES))
    assert panel.targets.shape == (160, 6, 3)
    assert panel.features.dtype == np.float32 and panel.targets.dtype == np.float32
    assert panel.horizons == (1, 5, 20)
    row = features.iloc[500]
    d = panel.dates.get_loc(row["date"])
    t = panel.tickers.get_loc(row["ticker"])
    np.testing.assert_allclose(panel.features[d, t], row[list(FEATURES)].to_numpy(float), 1e-6)
    label = labels[(labels["horizon"] == 5)].iloc[100]
    d = panel.dates.get_loc(label["date"])
    t = panel.tickers.get_loc(label["ticker"])
    assert panel.targets[d, t, 1] == pytest.approx(label["fwd_return"], rel=1e-6)
    # The last 20 dates have no 20-day label; a sample's label_end is its longest label's end.
    assert np.isnan(panel.targets[-20:, :, 2]).all()
    assert (
        panel.label_end[d, t]
        == labels[(labels["date"] == label["date"]) & (labels["ticker"] == label["ticker"])][
            "label_end"
        ]
        .max()
        .value
    )


def test_chunked_build_and_fingerprint_match_whole_array_ones(
    frames: tuple[pd.DataFrame, pd.DataFrame], panel: PanelData, monkeypatch
) -> None:
    """The dense array is filled a few columns at a time and the fingerprint sums a few
    dates at a time: the same arrays and sums as whole-array operations."""
    features, labels = frames
    whole = features[list(panel.feature_names)].to_numpy(np.float32)
    d, t = panel.dates.get_indexer(features["date"]), panel.tickers.get_indexer(features["ticker"])
    np.testing.assert_array_equal(panel.features[d, t], whole)
    sums = panel_data._column_sums(panel.features)
    np.testing.assert_allclose(sums, np.nansum(panel.features, axis=(0, 1), dtype=np.float64))
    monkeypatch.setattr(panel_data, "COLUMN_CHUNK", 3)
    monkeypatch.setattr(panel_data, "DATE_CHUNK", 7)
    small = PanelData.from_frames(features, labels)
    np.testing.assert_array_equal(small.features, panel.features)
    np.testing.assert_allclose(panel_data._column_sums(small.features), sums, rtol=1e-12)
    assert panel_fingerprint(small) == panel_fingerprint(panel)
    infinite = features.copy()
    infinite.loc[500, panel.feature_names[0]] = np.inf
    cleaned = PanelData.from_frames(infinite, labels).features
    assert np.isnan(cleaned[d[500], t[500], 0]) and np.isfinite(panel.features[d[500], t[500], 0])


def test_bad_inputs_are_named(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    features, labels = frames
    with pytest.raises(PanelDataError, match="duplicate"):
        PanelData.from_frames(pd.concat([features, features.head(1)]), labels)
    with pytest.raises(PanelDataError, match="numeric"):
        PanelData.from_frames(features.assign(sector="x"), labels)
    with pytest.raises(PanelDataError, match="label_end"):
        PanelData.from_frames(features, labels.drop(columns="label_end"))


def test_time_split_purges_and_embargoes(panel: PanelData) -> None:
    train, valid = time_split(panel, valid_fraction=0.25)
    first_valid = valid.sample_dates()[0]
    last_train = train.sample_dates()[-1]
    assert train.label_end[train.sample_mask].max() < first_valid.value
    gap = panel.dates.get_loc(first_valid) - panel.dates.get_loc(last_train)
    assert gap > max(panel.horizons)
    assert not (train.sample_mask & valid.sample_mask).any()
    assert train.features is panel.features  # views share arrays
    with pytest.raises(ValueError, match="embargo"):
        time_split(panel, embargo=5)


def test_nested_splits_stay_purged(panel: PanelData) -> None:
    rest, test = time_split(panel, valid_fraction=0.3)
    train, valid = time_split(rest, valid_fraction=0.3)
    assert valid.label_end[valid.sample_mask].max() < test.sample_dates()[0].value
    assert train.label_end[train.sample_mask].max() < valid.sample_dates()[0].value


def test_overlapping_validation_is_refused(panel: PanelData) -> None:
    train = panel.select(end=panel.dates[100])
    valid = panel.select(start=panel.dates[101])
    with pytest.raises(LeakageError, match="time_split"):
        create_model("ridge").fit(train, valid)


def test_scaler_uses_training_rows_only(panel: PanelData) -> None:
    train, _ = time_split(panel, valid_fraction=0.25)
    scaler = FeatureScaler.fit(train)
    later = panel.features.copy()
    later[~train.sample_mask] *= 1000.0  # change everything outside the training view
    shocked = PanelData(
        panel.dates,
        panel.tickers,
        panel.feature_names,
        panel.horizons,
        later,
        panel.targets,
        panel.label_end,
        panel.sample_mask,
    )
    other = FeatureScaler.fit(shocked.view(train.sample_mask))
    np.testing.assert_array_equal(scaler.center, other.center)
    np.testing.assert_array_equal(scaler.scale, other.scale)
    x = scaler.transform(panel.features)
    assert np.isfinite(x).all() and np.abs(x).max() <= scaler.clip
    assert (x[np.isnan(panel.features)] == 0).all()


def test_windows_index_into_one_array(panel: PanelData) -> None:
    window = 10
    scaler = FeatureScaler.fit(panel)
    standardised = torch.from_numpy(scaler.transform(panel.features, pad=window - 1))
    data = window_dataset(standardised, panel, TargetScaler.fit(panel), window, True)
    assert data.features.data_ptr() == standardised.data_ptr()
    own = sum(
        t.numel() * t.element_size()
        for t in (data.targets, data.target_mask, data.date_idx, data.ticker_idx)
    )
    assert own < 4 * panel.targets.nbytes + 4 * panel.features.nbytes  # linear, no windows
    ids = torch.tensor([0, 7, len(data) - 1])
    x, y, m = data.gather(ids)
    assert x.shape == (3, window, len(FEATURES)) and y.shape == (3, 3) and m.shape == (3, 3)
    plain = scaler.transform(panel.features)
    for row, k in enumerate(ids.tolist()):
        d, t = int(data.date_idx[k]), int(data.ticker_idx[k])
        rows = np.arange(d - window + 1, d + 1)
        expected = np.where(rows[:, None] >= 0, plain[np.maximum(rows, 0), t], 0.0)
        np.testing.assert_array_equal(x[row].numpy(), expected)
    item = data[7]
    torch.testing.assert_close(item[0], x[1])
