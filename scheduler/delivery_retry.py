"""Retry a delivery backend on transient failures, with exponential backoff and full jitter.

Only a :class:`~scheduler.delivery.DeliveryFailed` marked ``transient`` is retried; a permanent
one, or any other exception, goes straight to the caller. Retrying is safe because every backend
is idempotent per (UID, SEQUENCE, METHOD).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite, InviteDelivery


def send_with_retry(backend: InviteDelivery, invite: Invite, *, attempts: int = 4,
                    base_delay: float = 0.5, max_delay: float = 30.0,
                    sleep: Callable[[float], None] = time.sleep,
                    jitter: Callable[[float, float], float] = random.uniform,
                    ) -> DeliveryReceipt:
    """``backend.send(invite)``, tried up to ``attempts`` times; re-raise the last failure.

    Before retry *n* (1-based) it sleeps ``jitter(0, min(max_delay, base_delay * 2**(n-1)))``
    seconds ("full jitter": workers that failed together do not retry together).
    """
    if attempts < 1:
        raise ValueError(f"attempts: {attempts} must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return backend.send(invite)
        except DeliveryFailed as failure:
            if not failure.transient or attempt == attempts:
                raise
            sleep(jitter(0.0, min(max_delay, base_delay * 2 ** (attempt - 1))))
    raise AssertionError("unreachable")  # pragma: no cover
