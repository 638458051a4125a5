"""The time plan: which dates every fitted piece learns from, when serving and in the replay.

One rule, `fit_window`, says what a fit made at the close of an as-of date A may learn
from; serving applies it at the newest date and the walk-forward replay at each of its
retrain dates, so the backtest scores exactly the procedure that is served.

Everything is decided by positions in the trading calendar, never by which labels happen
to exist, so the window of an as-of date is the same whether it is computed on data that
ends at A or on data that goes on for years (truncation invariance). With `lag` the
execution lag, `h` the longest horizon and A at position a:

* label cutoff: the date `embargo` positions before A. A training date s must have its
  longest label end strictly before it: s + lag + h < a - embargo.
* training dates: every such date (expanding window) or the last `train_days` of them
  (rolling). The last `valid_days` of them are the early-stopping tail; the dates the
  model fits on are those whose labels end before the tail starts (purged).
* stacking and calibration rows: out-of-sample predictions of earlier fits dated in the
  `stack_days` (`calibration_days`) positions before the cutoff whose own label ends
  before the cutoff.
* predictions: from A until the next fit.

The replay fits at every `retrain_every`-th position, anchored on the first test date
(the date after `research_end`) and reaching back far enough that the first test fit has
its full stacking and calibration history. `research_end` is fixed (configured, or
recorded when first computed), and so is the replay's schedule: new dates only add fits.
Fitted feature transforms (GARCH) learn from the dates before the first replay fit
(`transform_end`), which no fit's out-of-sample predictions can precede.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import pandas as pd

WindowKind = Literal["expanding", "rolling"]
SERVING = "serving"


class TimePlanError(ValueError):
    """A plan that cannot be made from this calendar and these settings; says what to change."""


@dataclass(frozen=True)
class PlanSettings:
    """The rule's parameters, in trading dates of the calendar."""

    horizons: tuple[int, ...] = (1, 5, 20)
    execution_lag: int = 1
    embargo: int = 5
    retrain_every: int = 1008
    window: WindowKind = "expanding"
    train_days: int = 0
    valid_days: int = 252
    stack_days: int = 504
    calibration_days: int = 252
    min_train_days: int = 252
    research_days: int = 0

    def __post_init__(self) -> None:
        if not self.horizons or min(self.horizons) < 1:
            raise TimePlanError(f"horizons must be positive, got {self.horizons}")
        for name in ("execution_lag", "embargo", "train_days", "research_days"):
            if getattr(self, name) < 0:
                raise TimePlanError(f"{name} must be >= 0, got {getattr(self, name)}")
        names = ("retrain_every", "valid_days", "stack_days", "calibration_days", "min_train_days")
        for name in names:
            if getattr(self, name) < 1:
                raise TimePlanError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window not in ("expanding", "rolling"):
            raise TimePlanError(f"window must be 'expanding' or 'rolling', got {self.window!r}")
        if self.window == "rolling" and self.train_days < self.min_train_days + self.valid_days:
            raise TimePlanError(
                "a rolling window needs train_days >= min_train_days + valid_days "
                f"({self.min_train_days + self.valid_days})"
            )

    @property
    def label_reach(self) -> int:
        """Positions from a date to the end of its longest label."""
        return self.execution_lag + max(self.horizons)

    @property
    def history_days(self) -> int:
        """Positions of out-of-sample history the first test fit needs before its cutoff."""
        return max(self.stack_days, self.calibration_days) + self.embargo + self.label_reach


@dataclass(frozen=True)
class FitWindow:
    """What one fit learns from and what it predicts (dates inclusive).

    Training dates run from `train_start` to `valid_end`: the model fits on those up to
    `fit_end` and early-stops on `valid_start`..`valid_end`. `trained_through` is the last
    date any of its labels reads (the session before `label_cutoff`).
    """

    name: str
    as_of: pd.Timestamp
    label_cutoff: pd.Timestamp
    train_start: pd.Timestamp
    fit_end: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    stack_start: pd.Timestamp
    calibration_start: pd.Timestamp
    trained_through: pd.Timestamp
    predict_start: pd.Timestamp
    predict_end: pd.Timestamp | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            k: (None if v is None else str(v.date()) if isinstance(v, pd.Timestamp) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FitWindow:
        return cls(
            **{
                f.name: state[f.name]
                if f.name == "name"
                else None
                if state[f.name] is None
                else pd.Timestamp(state[f.name])
                for f in fields(cls)
            }
        )


@dataclass(frozen=True)
class TimePlan:
    """The replay's fits and the serving fit for one as-of date, under one rule."""

    as_of: pd.Timestamp
    research_end: pd.Timestamp
    settings: PlanSettings
    transform_end: pd.Timestamp
    folds: tuple[FitWindow, ...]
    serving: FitWindow
    calendar_start: pd.Timestamp

    @property
    def test_start(self) -> pd.Timestamp:
        """The first date the report scores: the first fit after `research_end`."""
        return next(f.as_of for f in self.folds if f.as_of > self.research_end)

    @property
    def research_window(self) -> FitWindow:
        """The first test fit: every label it learns from ends before the research
        boundary, so tuning and the research decisions fit and validate on it."""
        return next(f for f in self.folds if f.as_of == self.test_start)

    def fold(self, name: str) -> FitWindow:
        for window in (*self.folds, self.serving):
            if window.name == name:
                return window
        raise KeyError(f"no fit named {name!r} in the plan; have {[f.name for f in self.folds]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": str(self.as_of.date()),
            "research_end": str(self.research_end.date()),
            "transform_end": str(self.transform_end.date()),
            "calendar_start": str(self.calendar_start.date()),
            "settings": {**asdict(self.settings), "horizons": list(self.settings.horizons)},
            "folds": [f.to_dict() for f in self.folds],
            "serving": self.serving.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TimePlan:
        settings = dict(state["settings"])
        settings["horizons"] = tuple(int(h) for h in settings["horizons"])
        return cls(
            as_of=pd.Timestamp(state["as_of"]),
            research_end=pd.Timestamp(state["research_end"]),
            settings=PlanSettings(**settings),
            transform_end=pd.Timestamp(state["transform_end"]),
            folds=tuple(FitWindow.from_dict(f) for f in state["folds"]),
            serving=FitWindow.from_dict(state["serving"]),
            calendar_start=pd.Timestamp(state["calendar_start"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def settings_fingerprint(settings: PlanSettings, research_end: pd.Timestamp) -> str:
    """A short hash of what decides every window except the as-of date."""
    text = json.dumps(
        {**asdict(settings), "research_end": str(research_end.date())}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _calendar(dates: Sequence[Any] | pd.DatetimeIndex) -> pd.DatetimeIndex:
    calendar = pd.DatetimeIndex(pd.to_datetime(pd.Index(dates))).unique().sort_values()
    if len(calendar) < 2:
        raise TimePlanError("the calendar needs at least two trading dates")
    return calendar


def fit_window(
    calendar: pd.DatetimeIndex,
    position: int,
    settings: PlanSettings,
    name: str,
    predict_end: pd.Timestamp | None = None,
) -> FitWindow:
    """The window of a fit at the close of `calendar[position]` (see the module rules)."""
    cutoff = position - settings.embargo
    last_train = cutoff - settings.label_reach - 1
    first_train = 0
    if settings.window == "rolling":
        first_train = max(last_train - settings.train_days + 1, 0)
    n_train = last_train - first_train + 1
    if n_train < settings.min_train_days:
        raise TimePlanError(
            f"a fit at {calendar[position].date()} has {max(n_train, 0)} training dates, fewer "
            f"than min_train_days={settings.min_train_days}; give more history, start the "
            "replay later (a later research_end) or lower min_train_days"
        )
    valid_start = last_train - settings.valid_days + 1
    fit_end = valid_start - settings.label_reach - 1
    if fit_end < first_train + settings.min_train_days - 1:
        raise TimePlanError(
            f"a fit at {calendar[position].date()} has fewer than min_train_days="
            f"{settings.min_train_days} dates to fit on before its {settings.valid_days}-date "
            "early-stopping tail; give more history or lower valid_days or min_train_days"
        )
    return FitWindow(
        name=name,
        as_of=calendar[position],
        label_cutoff=calendar[cutoff],
        train_start=calendar[first_train],
        fit_end=calendar[fit_end],
        valid_start=calendar[valid_start],
        valid_end=calendar[last_train],
        stack_start=calendar[max(cutoff - settings.stack_days, 0)],
        calibration_start=calendar[max(cutoff - settings.calibration_days, 0)],
        trained_through=calendar[cutoff - 1],
        predict_start=calendar[position],
        predict_end=predict_end,
    )


def first_fit_position(settings: PlanSettings) -> int:
    """The earliest position whose fit has `min_train_days` dates to fit on before its
    early-stopping tail (expanding window)."""
    return (
        settings.min_train_days + 2 * settings.label_reach + settings.valid_days + settings.embargo
    )


def default_research_end(dates: Sequence[Any] | pd.DatetimeIndex, fraction: float) -> pd.Timestamp:
    """The date `fraction` of the way through the calendar: the research boundary used when
    none is configured (it is then recorded, so later, longer histories keep it)."""
    if not 0.0 < fraction < 1.0:
        raise TimePlanError(f"research_fraction must be in (0, 1), got {fraction}")
    calendar = _calendar(dates)
    return calendar[int(fraction * (len(calendar) - 1))]


def research_boundary(
    dates: Sequence[Any] | pd.DatetimeIndex,
    configured: str,
    recorded: str | None,
    fraction: float,
) -> tuple[pd.Timestamp, str]:
    """(research_end, where it came from): the configured date, else the one recorded when
    the plan was first made, else the date `fraction` of the way through `dates` (which the
    caller records, so the boundary does not drift as history grows)."""
    if configured:
        return pd.Timestamp(configured), "configured"
    if recorded:
        return pd.Timestamp(recorded), "recorded"
    return default_research_end(dates, fraction), f"{fraction:.0%} of the history, recorded now"


def build_time_plan(
    dates: Sequence[Any] | pd.DatetimeIndex,
    settings: PlanSettings,
    research_end: Any,
) -> TimePlan:
    """The plan for the last date of `dates` (the as-of date): replay fits from the start of
    the schedule through the as-of date, and the serving fit at the as-of date."""
    calendar = _calendar(dates)
    research_end = pd.Timestamp(research_end)
    test_pos = int(calendar.searchsorted(research_end, side="right"))
    if test_pos >= len(calendar):
        raise TimePlanError(
            f"research_end {research_end.date()} is on or after the last date "
            f"{calendar[-1].date()}: no test period is left; choose an earlier research_end"
        )
    if test_pos < first_fit_position(settings):
        raise TimePlanError(
            f"the first test fit at {calendar[test_pos].date()} has fewer than "
            f"min_train_days={settings.min_train_days} training dates; choose a later "
            "research_end or lower min_train_days"
        )
    # Fits before the test period, as many as the first test fit's history asks for (and
    # `research_days` more), as long as each has its minimum of training dates.
    wanted = settings.history_days + settings.research_days
    back = min(
        -(-wanted // settings.retrain_every),
        (test_pos - first_fit_position(settings)) // settings.retrain_every,
    )
    starts = list(
        range(test_pos - back * settings.retrain_every, len(calendar), settings.retrain_every)
    )
    folds = []
    for k, start in enumerate(starts):
        stop = starts[k + 1] - 1 if k + 1 < len(starts) else len(calendar) - 1
        name = f"fold_{calendar[start]:%Y%m%d}"
        folds.append(fit_window(calendar, start, settings, name, calendar[stop]))
    serving = fit_window(calendar, len(calendar) - 1, settings, SERVING)
    return TimePlan(
        as_of=calendar[-1],
        research_end=research_end,
        settings=settings,
        transform_end=calendar[starts[0] - 1],
        folds=tuple(folds),
        serving=serving,
        calendar_start=calendar[0],
    )
