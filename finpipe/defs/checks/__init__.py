"""Asset checks, one module per group."""
