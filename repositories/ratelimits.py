"""Shared failure counters: `rate_limits/{key}`, one document per address and time window.

The id holds a keyed hash of the client address, never the address (an IP is personal data).
`expires_at` is the end of the window: a Firestore TTL policy on it deletes old documents.
"""

from __future__ import annotations

from datetime import datetime

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from repositories.clients import FirestoreCall, translated

COLLECTION = "rate_limits"
# A counter that does not answer quickly is skipped (the limiter falls back to its per-process
# count), so a Firestore outage never holds a request for the library's long default retries.
_CALL: FirestoreCall = {"timeout": 2.0, "retry": None}
_ERRORS = (google_exceptions.GoogleAPIError, ConnectionError, TimeoutError)


class RateLimitRepository:
    """Count failed and refused attempts per (address hash, window), across every process."""

    def __init__(self, client: firestore.Client) -> None:
        self._collection = client.collection(COLLECTION)

    def add(
        self,
        key: str,
        scope: str,
        window_start: datetime,
        expires_at: datetime,
        failures: int = 1,
        throttled: int = 0,
    ) -> tuple[int, int]:
        """Add to the window's counts; return (failures, throttled) as they stand after it.

        One write, no transaction: the server applies both increments atomically and returns
        their results, so concurrent processes each see a distinct count.

        Raises:
            UnavailableError: Firestore did not answer or refused the write.
        """
        with translated("Firestore (rate limits)", _ERRORS):
            result = self._collection.document(key).set(
                {
                    "scope": scope,
                    "window_start": window_start,
                    "expires_at": expires_at,
                    # Transform results come back in field-path order: failures, throttled.
                    "failures": firestore.Increment(failures),
                    "throttled": firestore.Increment(throttled),
                },
                merge=True,
                **_CALL,
            )
        counted, refused = (int(value.integer_value) for value in result.transform_results)
        return counted, refused

    def failures(self, key: str) -> int:
        """Return the window's failure count, 0 when it has none.

        Raises:
            UnavailableError: Firestore did not answer.
        """
        with translated("Firestore (rate limits)", _ERRORS):
            snapshot = self._collection.document(key).get(**_CALL)
        return int((snapshot.to_dict() or {}).get("failures", 0)) if snapshot.exists else 0
