"""finpipe: an orchestrated financial ML pipeline, from market data to backtest reports."""

__version__ = "0.1.0"
