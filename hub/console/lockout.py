"""Sign-in lockout: after repeated wrong passwords for one email, refuse that email for a while.

Kept in this process (a replica counts on its own), keyed by the lower-cased email so an
attacker cannot lock someone out from many addresses any faster than from one, and so a wrong
guess costs the same whether or not the email exists.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCK_FOR = timedelta(minutes=15)


class Lockout:
    """Counts wrong passwords per email and locks that email out for a while after too many."""
    def __init__(self, max_failures: int = MAX_FAILURES, window: timedelta = WINDOW,
                 lock_for: timedelta = LOCK_FOR) -> None:
        self.max_failures, self.window, self.lock_for = max_failures, window, lock_for
        self._failures: dict[str, deque[datetime]] = {}
        self._locked_until: dict[str, datetime] = {}

    def locked_until(self, email: str, now: datetime) -> datetime | None:
        until = self._locked_until.get(email.strip().lower())
        return until if until is not None and until > now else None

    def failed(self, email: str, now: datetime) -> bool:
        """Count a failure; True when this failure locks the email."""
        key = email.strip().lower()
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        q.append(now)
        if len(q) >= self.max_failures:
            self._locked_until[key] = now + self.lock_for
            q.clear()
            return True
        if len(self._failures) > 50_000:  # forget idle emails
            for k in [k for k, v in self._failures.items() if not v]:
                del self._failures[k]
        return False

    def succeeded(self, email: str) -> None:
        key = email.strip().lower()
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)
