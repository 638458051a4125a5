from datetime import date

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from finpipe.core.contracts import PRICES, schema_violations
from finpipe.data.quality import PRICE_RULES, quarantine_split
from finpipe.data.sources.synthetic import (
    SyntheticConfig,
    SyntheticSource,
    synthetic_panel,
    synthetic_returns,
)


def wide_log_returns(panel: pd.DataFrame) -> np.ndarray:
    close = panel.pivot(index="date", columns="ticker", values="adj_close")
    return np.diff(np.log(close.to_numpy()), axis=0)


def test_seeded_reproducibility_and_seed_sensitivity():
    cfg = SyntheticConfig(n_tickers=5, n_days=200, seed=11, signal_strength=0.2, regimes=True)
    pdt.assert_frame_equal(synthetic_panel(cfg), synthetic_panel(cfg))
    other = synthetic_panel(SyntheticConfig(n_tickers=5, n_days=200, seed=12))
    assert not np.allclose(synthetic_panel(cfg)["adj_close"], other["adj_close"])


def test_extending_a_panel_only_appends_dates():
    short = synthetic_panel(SyntheticConfig(n_tickers=4, n_days=100, regimes=True, seed=5))
    long = synthetic_panel(SyntheticConfig(n_tickers=4, n_days=300, regimes=True, seed=5))
    head = long[long["date"] <= short["date"].max()].reset_index(drop=True)
    pdt.assert_frame_equal(head, short)


def test_dates_never_pass_the_end_and_keep_their_values():
    """A panel that would run past its end (today by default) ends on the last business day
    on or before it; its values are those of the unshifted panel, position by position."""
    today = pd.Timestamp.today().normalize()
    assert SyntheticConfig(n_days=6300).dates[-1] <= today
    assert SyntheticConfig(n_days=100).dates[0] == pd.Timestamp("2005-01-03")
    shifted = SyntheticConfig(n_tickers=2, n_days=6300, seed=4, end="2026-06-13")  # a Saturday
    dates = shifted.dates
    assert len(dates) == 6300 and dates.is_monotonic_increasing
    assert dates[-1] == pd.Timestamp("2026-06-12") and (dates.day_of_week < 5).all()
    unshifted = SyntheticConfig(n_tickers=2, n_days=6300, seed=4, end="2100-01-01")
    assert unshifted.dates[0] == pd.Timestamp("2005-01-03") and unshifted.dates[-1] > today
    a, b = synthetic_panel(shifted), synthetic_panel(unshifted)
    np.testing.assert_array_equal(a["adj_close"], b["adj_close"])
    assert a["date"].max() == dates[-1]


def test_panel_honours_the_contract_and_every_quality_rule():
    panel = synthetic_panel(SyntheticConfig(n_tickers=10, n_days=300, regimes=True))
    assert schema_violations(panel, PRICES) == []
    _, quarantined = quarantine_split(panel, PRICE_RULES, pd.Timestamp("2030-01-01"))
    assert quarantined.empty


def test_zero_strength_has_no_autocorrelation_beyond_noise():
    cfg = SyntheticConfig(n_tickers=40, n_days=2000, seed=1, signal_strength=0.0)
    ret = wide_log_returns(synthetic_panel(cfg))
    ret = ret - ret.mean(axis=0)
    n_obs = ret.shape[0] * ret.shape[1]
    for lag in (1, 2, 5, 10, 20):
        acf = (ret[lag:] * ret[:-lag]).sum() / (ret * ret).sum()
        assert abs(acf) < 3.0 / np.sqrt(n_obs), f"lag {lag} autocorrelation {acf:.4f}"


def test_planted_strength_is_recoverable_from_past_returns():
    cfg = SyntheticConfig(n_tickers=40, n_days=2000, seed=1, signal_strength=0.2)
    market, ret = synthetic_returns(cfg)
    beta_free = ret - np.polyfit(market, ret, 1)[0] * market[:, None]
    momentum = pd.DataFrame(beta_free).rolling(20).sum().to_numpy()
    x, y = momentum[20:-1].ravel(), beta_free[21:].ravel()
    corr = np.corrcoef(x, y)[0, 1]
    assert 0.12 < corr < 0.25, corr


def test_source_serves_date_ranges_and_benchmark():
    src = SyntheticSource(SyntheticConfig(n_tickers=3, n_days=50))
    rows = src.prices(["S0001", "^SYN"], date(2005, 1, 5), date(2005, 1, 7))
    assert rows.groupby("ticker").size().to_dict() == {"S0001": 3, "^SYN": 3}
    with pytest.raises(KeyError):
        src.prices(["S0999"], date(2005, 1, 5), date(2005, 1, 7))


def test_strength_must_be_a_correlation():
    with pytest.raises(ValueError):
        SyntheticConfig(signal_strength=1.0)
