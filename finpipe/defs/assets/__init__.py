"""Software-defined assets, one module per group."""
