"""The time plan: a hand-worked window, purging by construction, a fixed replay schedule and
truncation invariance (a plan made on data that ends at a date equals the later plan's
window for that date)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finpipe.core.time_plan import (
    PlanSettings,
    TimePlan,
    TimePlanError,
    build_time_plan,
    default_research_end,
    fit_window,
)

CALENDAR = pd.bdate_range("2000-01-03", periods=400)
SMALL = PlanSettings(
    horizons=(1, 5),
    execution_lag=1,
    embargo=2,
    retrain_every=40,
    valid_days=20,
    stack_days=30,
    calibration_days=20,
    min_train_days=50,
)


def test_fit_window_hand_worked() -> None:
    # A fit at position 200: cutoff 198; label reach 1 + 5 = 6, so the last training date
    # is 198 - 6 - 1 = 191 (its label ends at 197 < 198). The tail is the last 20 training
    # dates, 172..191; the model fits on dates whose labels end before 172: up to 165.
    w = fit_window(CALENDAR, 200, SMALL, "x")
    assert w.as_of == CALENDAR[200] and w.label_cutoff == CALENDAR[198]
    assert (w.train_start, w.fit_end) == (CALENDAR[0], CALENDAR[165])
    assert (w.valid_start, w.valid_end) == (CALENDAR[172], CALENDAR[191])
    assert w.trained_through == CALENDAR[197]
    assert (w.stack_start, w.calibration_start) == (CALENDAR[168], CALENDAR[178])
    assert w.predict_start == CALENDAR[200] and w.predict_end is None


def test_rolling_window_keeps_the_last_train_days() -> None:
    rolling = PlanSettings(**{**SMALL.__dict__, "window": "rolling", "train_days": 100})
    w = fit_window(CALENDAR, 200, rolling, "x")
    assert (w.train_start, w.valid_end) == (CALENDAR[92], CALENDAR[191])


def test_replay_schedule_is_anchored_on_the_test_start() -> None:
    plan = build_time_plan(CALENDAR, SMALL, CALENDAR[249])
    starts = [f.as_of for f in plan.folds]
    assert plan.test_start == CALENDAR[250] and CALENDAR[250] in starts
    positions = [CALENDAR.get_loc(s) for s in starts]
    assert all(b - a == 40 for a, b in itertools.pairwise(positions))
    # Enough history before the test: stacking (30) + embargo (2) + label reach (6).
    assert positions[0] <= 250 - 38
    assert plan.transform_end == CALENDAR[positions[0] - 1]
    # Blocks tile the dates from the first fit to the as-of date exactly once.
    covered = [
        d
        for f in plan.folds
        for d in CALENDAR[CALENDAR.slice_indexer(f.predict_start, f.predict_end)]
    ]
    assert covered == list(CALENDAR[positions[0] :])
    assert plan.serving.as_of == CALENDAR[-1] and plan.serving.predict_end is None


def test_no_training_label_reaches_the_cutoff() -> None:
    plan = build_time_plan(CALENDAR, SMALL, CALENDAR[249])
    for w in (*plan.folds, plan.serving):
        last = CALENDAR.get_loc(w.valid_end)
        assert CALENDAR[last + SMALL.label_reach] < w.label_cutoff
        fit_last = CALENDAR.get_loc(w.fit_end)
        assert CALENDAR[fit_last + SMALL.label_reach] < w.valid_start


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=252, max_value=399))
def test_truncated_plans_agree_with_the_full_plan(cut: int) -> None:
    full = build_time_plan(CALENDAR, SMALL, CALENDAR[249])
    short = build_time_plan(CALENDAR[: cut + 1], SMALL, CALENDAR[249])
    shared = [f for f in full.folds if f.as_of <= CALENDAR[cut]]
    assert [f.name for f in short.folds] == [f.name for f in shared]
    for a, b in zip(short.folds[:-1], shared[:-1], strict=True):
        assert a == b
    assert short.folds[-1].predict_end == CALENDAR[cut]
    assert short.serving == fit_window(CALENDAR, cut, SMALL, "serving")
    assert short.transform_end == full.transform_end


def test_round_trip_and_default_research_end() -> None:
    plan = build_time_plan(CALENDAR, SMALL, default_research_end(CALENDAR, 0.6))
    assert TimePlan.from_dict(plan.to_dict()) == plan
    assert plan.research_end == CALENDAR[int(0.6 * 399)]


@pytest.mark.parametrize(
    ("research_end", "message"),
    [(CALENDAR[-1], "no test period is left"), (CALENDAR[50], "fewer than min_train_days")],
)
def test_impossible_plans_say_what_to_change(research_end, message: str) -> None:
    with pytest.raises(TimePlanError, match=message):
        build_time_plan(CALENDAR, SMALL, research_end)


def test_settings_are_validated() -> None:
    with pytest.raises(TimePlanError, match="retrain_every must be >= 1"):
        PlanSettings(retrain_every=0)
    with pytest.raises(TimePlanError, match="rolling window needs train_days"):
        PlanSettings(window="rolling", train_days=10)
