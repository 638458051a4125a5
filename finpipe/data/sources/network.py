"""Retries for the live sources, and the one message that tells users how to work offline.

A live source turns each failure of its client library into one of two kinds: transient
(network down, service busy: worth retrying) or permanent (unknown id, bad key). Transient
failures are retried with exponential backoff; when the attempts run out the user gets a
SourceUnavailableError that says the network is unreachable and how to switch to the bundled
data that ships with finpipe.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from http.client import IncompleteRead
from typing import TypeVar
from urllib.error import HTTPError, URLError

from finpipe.data.sources.base import SourceUnavailableError

T = TypeVar("T")

OFFLINE_ADVICE = (
    'To work offline, set the market_data resource\'s source to "bundled" (the default), '
    'e.g. run config {"resources": {"market_data": {"config": {"source": "bundled"}}}}'
)

# Exception classes (matched by name anywhere in the class hierarchy, so the HTTP libraries
# need not be imported here) and message fragments that mean "the network or the service is
# down", as raised by urllib, requests and curl_cffi (curl: (6) DNS, (7) connect, (28) timeout)
# or answered by a busy server (HTTP 429 and 5xx).
TRANSIENT_TYPE_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "ChunkedEncodingError",
        "ProxyError",
        "SSLError",
        "DNSError",
        "YFRateLimitError",
    }
)
TRANSIENT_TEXT = re.compile(
    r"curl: \(\d+\)|ConnectionError|Timeout|timed out|"
    r"Could not resolve|Name or service not known|Temporary failure in name resolution|"
    r"Network is unreachable|Connection (?:refused|reset|aborted)|Failed to connect|"
    r"RemoteDisconnected|Too Many Requests|Rate limited|HTTP Error 5\d\d|"
    r"Internal Server Error|Service Unavailable|Bad Gateway|Gateway Time-?out",
    re.IGNORECASE,
)


class TransientSourceError(Exception):
    """A failure that may pass on retry; its message is safe to show (no secrets)."""


def looks_transient(error: BaseException | str) -> bool:
    """True when an exception, or an error text a library logged instead of raising, says the
    network or the service is down rather than that the request itself is wrong."""
    if isinstance(error, str):
        return bool(TRANSIENT_TEXT.search(error))
    if isinstance(error, HTTPError):
        return False
    if isinstance(
        error, ConnectionError | TimeoutError | socket.gaierror | URLError | IncompleteRead
    ):
        return True
    if any(cls.__name__ in TRANSIENT_TYPE_NAMES for cls in type(error).__mro__):
        return True
    return bool(TRANSIENT_TEXT.search(f"{type(error).__name__}: {error}"))


def unreachable_message(source: str, action: str, attempts: int, last_error: str) -> str:
    """What users read when a live source stays unreachable: what failed, why, what to do."""
    plural = "s" if attempts != 1 else ""
    return (
        f"{source}: could not {action} after {attempts} attempt{plural}: the network is "
        f"unreachable or the service is not answering (last error: {last_error}). {OFFLINE_ADVICE}"
    )


def call_with_retries(
    fetch: Callable[[], T],
    *,
    source: str,
    action: str,
    max_attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None],
    logger: logging.Logger,
) -> T:
    """Run `fetch`, retrying on TransientSourceError after backoff_seconds * 2**k (k = 0, 1, ...).

    After `max_attempts` transient failures, raise SourceUnavailableError. It is raised outside
    any except block, so it carries no chained exception that could leak request details.
    """
    last_error = ""
    for attempt in range(1, max_attempts + 1):
        try:
            return fetch()
        except TransientSourceError as exc:
            last_error = str(exc)
        if attempt < max_attempts:
            delay = backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "%s: could not %s (attempt %d of %d: %s); retrying in %.1f s",
                source,
                action,
                attempt,
                max_attempts,
                last_error,
                delay,
            )
            sleep(delay)
    raise SourceUnavailableError(unreachable_message(source, action, max_attempts, last_error))


def check_retry_settings(max_attempts: int, backoff_seconds: float) -> None:
    """Reject retry settings that would never call the service or wait a negative time."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if backoff_seconds < 0:
        raise ValueError(f"backoff_seconds must not be negative, got {backoff_seconds}")
