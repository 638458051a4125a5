"""Universes: the tickers the pipeline covers, with names and sectors."""

from __future__ import annotations

import pandas as pd

from finpipe.core.identifiers import validate_tickers

# The 20 S&P 500 stocks of the bundled dataset, with their GICS sectors.
SP500_20 = [
    ("AAPL", "Apple Inc.", "Information Technology"),
    ("AMD", "Advanced Micro Devices", "Information Technology"),
    ("BAC", "Bank of America", "Financials"),
    ("BBY", "Best Buy", "Consumer Discretionary"),
    ("CVX", "Chevron", "Energy"),
    ("GE", "General Electric", "Industrials"),
    ("HD", "Home Depot", "Consumer Discretionary"),
    ("JNJ", "Johnson & Johnson", "Health Care"),
    ("JPM", "JPMorgan Chase", "Financials"),
    ("KO", "Coca-Cola", "Consumer Staples"),
    ("LLY", "Eli Lilly", "Health Care"),
    ("MRK", "Merck & Co.", "Health Care"),
    ("MSFT", "Microsoft", "Information Technology"),
    ("PEP", "PepsiCo", "Consumer Staples"),
    ("PFE", "Pfizer", "Health Care"),
    ("PG", "Procter & Gamble", "Consumer Staples"),
    ("RRC", "Range Resources", "Energy"),
    ("UNH", "UnitedHealth Group", "Health Care"),
    ("WMT", "Walmart", "Consumer Staples"),
    ("XOM", "Exxon Mobil", "Energy"),
]

# The five stocks of bokeh-sampledata's daily OHLCV (2000-2013), with their GICS sectors today;
# GOOG is Alphabet's class A history (GOOGL since 2014), FB is Meta Platforms.
BOKEH_OHLCV = [
    ("AAPL", "Apple Inc.", "Information Technology"),
    ("FB", "Meta Platforms (Facebook)", "Communication Services"),
    ("GOOG", "Alphabet (Google), class A", "Communication Services"),
    ("IBM", "International Business Machines", "Information Technology"),
    ("MSFT", "Microsoft", "Information Technology"),
]

# The bundled source serves each preset from one dataset (`bundled.PRESET_STOCKS`).
PRESETS = {"sp500_20": SP500_20, "bokeh_ohlcv": BOKEH_OHLCV}
UNKNOWN_SECTOR = "Unknown"


def universe_frame(spec: str) -> pd.DataFrame:
    """`ticker, name, sector` for a preset name (`sp500_20`, `bokeh_ohlcv`) or comma-separated
    tickers.

    Tickers given by hand keep the preset's name and sector where a preset knows them.
    """
    if spec in PRESETS:
        rows = PRESETS[spec]
    else:
        known = {t: (t, n, s) for preset in PRESETS.values() for t, n, s in preset}
        tickers = validate_tickers([t.strip().upper() for t in spec.split(",") if t.strip()])
        if not tickers:
            raise ValueError(
                f"empty universe {spec!r}: give a preset ({sorted(PRESETS)}) or tickers 'AAPL,MSFT'"
            )
        rows = [known.get(t, (t, t, UNKNOWN_SECTOR)) for t in tickers]
    frame = pd.DataFrame(rows, columns=["ticker", "name", "sector"])
    validate_tickers(frame["ticker"])
    return frame.astype(str)
