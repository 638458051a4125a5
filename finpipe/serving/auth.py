"""API keys: random secrets stored only as SHA-256 hashes, each with a name and a scope.

A key entry is `name:scope:sha256hex` (`finpipe keys create NAME --scope read|admin` makes a
key and prints its entry). The service reads entries from the file FINPIPE_API_KEYS_FILE
names (one a line, `#` comments) and from FINPIPE_API_KEYS (separated by commas or
newlines). `read` keys may call the read endpoints; `admin` keys may also request runs.
A presented key is hashed and compared with every stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from finpipe.core.identifiers import validate_name

READ, ADMIN = "read", "admin"
SCOPES = (READ, ADMIN)
KEY_PREFIX = "fpk_"
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """An unusable key entry; the message says which and why."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its name, scope and the SHA-256 of the secret."""

    name: str
    scope: str
    digest: bytes

    def allows(self, scope: str) -> bool:
        return self.scope == ADMIN or self.scope == scope


def hash_key(secret: str) -> str:
    """The hex SHA-256 of a key (keys are 256-bit random secrets, so a fast hash suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(name: str, scope: str) -> tuple[str, str]:
    """A new random key and its entry `name:scope:sha256`; only the entry is to be stored."""
    entry = f"{name}:{scope}:"
    parse_entry(entry + "0" * 64)  # validates the name and scope
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, entry + hash_key(secret)


def parse_entry(entry: str) -> ApiKey:
    """An `name:scope:sha256hex` entry as an ApiKey."""
    parts = entry.strip().split(":")
    if len(parts) != 3:
        raise KeyConfigError(f"key entry {entry.strip()[:40]!r} is not name:scope:sha256hex")
    name, scope, digest = parts
    validate_name(name)
    if scope not in SCOPES:
        raise KeyConfigError(f"key {name!r}: scope {scope!r} is not one of {list(SCOPES)}")
    if not HASH_PATTERN.fullmatch(digest):
        raise KeyConfigError(f"key {name!r}: the hash must be 64 lower-case hex digits (SHA-256)")
    return ApiKey(name, scope, bytes.fromhex(digest))


def load_keys(keys_file: str = "", keys: str = "") -> list[ApiKey]:
    """The entries of `keys_file` (lines, `#` comments) and of `keys` (commas or newlines)."""
    entries = []
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise KeyConfigError(f"FINPIPE_API_KEYS_FILE {keys_file!r} is not a file")
        entries += [line.partition("#")[0] for line in path.read_text().splitlines()]
    entries += re.split(r"[,\n]", keys)
    loaded = [parse_entry(e) for e in entries if e.strip()]
    names = [k.name for k in loaded]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise KeyConfigError(f"duplicate key names: {duplicated}")
    return loaded


class KeyRing:
    """The stored keys; `find` returns the key a secret belongs to, or None."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def find(self, secret: str) -> ApiKey | None:
        """Compare the secret's hash with every stored hash (constant time, no early exit)."""
        digest = hashlib.sha256(secret.encode()).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
