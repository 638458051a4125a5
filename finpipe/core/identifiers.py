"""Strict validation of ticker symbols, macro series ids and model names before they touch a
path or a query."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Yahoo-style symbols: plain (AAPL), share classes (BRK-B), exchange suffixes (7203.T),
# indices (^GSPC), futures and FX (GC=F, EURUSD=X). No slashes, no whitespace, no "..".
TICKER_PATTERN = re.compile(r"^\^?[A-Z0-9][A-Z0-9\-=]{0,11}(\.[A-Z0-9]{1,4})?$")
SERIES_ID_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,39}$")
# Lower-case names: model families and ensembles (ridge, hist_gbm, ensemble), portfolio
# methods. A model in the predictions tables may carry its role: lstm@challenger.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MODEL_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}(@[a-z]{1,20})?$")


class InvalidIdentifierError(ValueError):
    """A ticker, series id or name that does not match its strict pattern."""


def validate_ticker(ticker: str) -> str:
    """Return the ticker if it is a well-formed symbol, else raise with the rule it broke."""
    if not isinstance(ticker, str) or not TICKER_PATTERN.fullmatch(ticker):
        raise InvalidIdentifierError(
            f"invalid ticker {ticker!r}: tickers must be upper-case symbols such as AAPL, BRK-B, "
            f"7203.T or ^GSPC (pattern {TICKER_PATTERN.pattern})"
        )
    return ticker


def validate_tickers(tickers: Iterable[str]) -> list[str]:
    """Validate every ticker; reject duplicates too, since each one names a storage path."""
    out = [validate_ticker(t) for t in tickers]
    dupes = sorted({t for t in out if out.count(t) > 1})
    if dupes:
        raise InvalidIdentifierError(f"duplicate tickers in universe: {dupes}")
    return out


def validate_series_id(series_id: str) -> str:
    """Return the FRED-style series id if well formed (e.g. VIXCLS, CPILFESL, FF_MKT_RF)."""
    if not isinstance(series_id, str) or not SERIES_ID_PATTERN.fullmatch(series_id):
        raise InvalidIdentifierError(
            f"invalid series id {series_id!r}: series ids are upper-case letters, digits and "
            f"underscores such as VIXCLS or BAA (pattern {SERIES_ID_PATTERN.pattern})"
        )
    return series_id


def validate_name(name: str) -> str:
    """Return a lower-case name (a model family, a portfolio method) if well formed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidIdentifierError(
            f"invalid name {name!r}: names are lower-case letters, digits and underscores "
            f"starting with a letter, such as ridge or hist_gbm (pattern {NAME_PATTERN.pattern})"
        )
    return name


def validate_model(model: str) -> str:
    """Return a predictions table's model name (ridge, ensemble, lstm@challenger) if well
    formed."""
    if not isinstance(model, str) or not MODEL_PATTERN.fullmatch(model):
        raise InvalidIdentifierError(
            f"invalid model {model!r}: models are lower-case names such as ridge, ensemble or "
            f"lstm@challenger (pattern {MODEL_PATTERN.pattern})"
        )
    return model
