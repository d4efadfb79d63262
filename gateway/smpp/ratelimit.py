"""Token bucket for per-account message rates (the excess is answered ESME_RTHROTTLED)."""

from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows `rate` tokens per second on average and bursts of up to `burst` tokens.

    The bucket starts full. Time comes from the injected `now` clock; a clock that steps
    backwards adds nothing.
    """

    __slots__ = ("rate", "burst", "_now", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: Callable[[], float]) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._stamp = now()

    def _refill(self) -> None:
        now = self._now()
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def try_take(self, n: float = 1) -> bool:
        """Take `n` tokens if available; False (taking nothing) otherwise.

        A request for more than `burst` tokens can never succeed.
        """
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens
