"""Monitoring stage: drift of features and live performance, operator alerts."""
