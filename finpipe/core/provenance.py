"""Where a result came from: a fingerprint of the code that computes it."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


@cache
def code_fingerprint() -> str:
    """A short hash of finpipe's domain code (every module outside the Dagster layer), so a
    stored result records the code that made it and is recomputed when that code changes."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("defs", "definitions.py"):
            continue
        digest.update(str(relative).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
