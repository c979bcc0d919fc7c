"""How many exports may run at once in this process: in all, and per provider account."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from service.errors import RateLimitedError

# An export of a sealed archive takes seconds (100k records to CSV in about 5 s): a client
# told to come back after this long usually finds its slot free.
RETRY_AFTER_SECONDS = 5


class ExportSlots:
    """Count the exports running in this process and refuse one past either limit.

    An export is built inside a request thread, for seconds to minutes. The threads it would
    take from Meta's webhook are this process's, so this process counts: with fewer slots
    than gunicorn threads, one is always left for the webhook. The per-account limit keeps one
    account from taking every slot. Neither is shared across processes or instances.
    """

    def __init__(
        self, per_process: int, per_account: int, retry_after: int = RETRY_AFTER_SECONDS
    ) -> None:
        if per_process < 1 or per_account < 1:
            raise ValueError("export limits must be at least 1")
        self.per_process = per_process
        self.per_account = per_account
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._running = 0
        self._by_account: dict[str, int] = {}

    @property
    def running(self) -> int:
        return self._running

    @contextlib.contextmanager
    def hold(self, account: str) -> Iterator[None]:
        """Hold a slot while the block runs, however it ends; raise RateLimitedError if none."""
        self._take(account)
        try:
            yield
        finally:
            self._give_back(account)

    def _take(self, account: str) -> None:
        with self._lock:
            if self._by_account.get(account, 0) >= self.per_account:
                raise RateLimitedError(
                    "this account already has as many exports running as it may; "
                    "try again when one has finished",
                    retry_after=self.retry_after,
                )
            if self._running >= self.per_process:
                raise RateLimitedError(
                    "too many exports are running; try again shortly",
                    retry_after=self.retry_after,
                )
            self._running += 1
            self._by_account[account] = self._by_account.get(account, 0) + 1

    def _give_back(self, account: str) -> None:
        with self._lock:
            self._running -= 1
            left = self._by_account[account] - 1
            if left:
                self._by_account[account] = left
            else:
                del self._by_account[account]
