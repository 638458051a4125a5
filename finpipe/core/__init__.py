"""Shared core: data contracts, identifiers, storage layout and atomic writes, the exchange
calendar, the shared keys and constants, and the one metrics module every stage reports with."""
