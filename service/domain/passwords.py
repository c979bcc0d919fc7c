"""The day's export password: derived from ZIP_PASSWORD and the UTC date, nothing stored."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

# No 0/O, 1/l/I: the password is read off a screen and typed into an unzip dialog.
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
_LENGTH = 24  # 24 symbols of 57 carry 140 bits


@dataclass(frozen=True)
class DailyPassword:
    password: str
    valid_for: date
    valid_until: datetime


def export_password(master_secret: str, day: date) -> DailyPassword:
    """Return the export password for a UTC day; it changes at midnight UTC."""
    digest = hmac.new(
        master_secret.encode(), f"intake-export-password:{day.isoformat()}".encode(), hashlib.sha256
    ).digest()
    number = int.from_bytes(digest, "big")
    symbols = []
    for _ in range(_LENGTH):
        number, index = divmod(number, len(_ALPHABET))
        symbols.append(_ALPHABET[index])
    valid_until = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return DailyPassword("".join(symbols), day, valid_until)


def today_utc(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()
