"""Erlang C forecast for a queue's forecast gauges: wait probability, service level, ASA, staffing.

Everything here is a pure function of its arguments. The model is M/M/N with
infinite patience (Erlang C): Poisson arrivals at rate λ, exponential handling
with mean AHT, N identical agents, offered load A = λ·AHT erlangs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The forecast reads λ from the offers of the last 15 minutes.
WINDOW_SECONDS = 900
WINDOWS_PER_HOUR = 4


def _check_load(n: int, a: float) -> None:
    """Reject inputs that have no meaning for a queue."""
    if n < 0:
        raise ValueError(f"number of agents must be >= 0, got {n}")
    if not a >= 0:  # also rejects NaN
        raise ValueError(f"offered load must be >= 0 erlangs, got {a}")


def _check_times(aht: float, t: float) -> None:
    """Reject handling and threshold times that make the formulas meaningless."""
    if not aht > 0:
        raise ValueError(f"average handling time must be > 0 seconds, got {aht}")
    if not t >= 0:
        raise ValueError(f"service level threshold must be >= 0 seconds, got {t}")


def _next_b(k: int, a: float, b_prev: float) -> float:
    """One step of the Erlang B recurrence, from B(k-1) to B(k)."""
    # This form keeps every intermediate in [0, 1], so there is no overflow even
    # for thousands of servers, unlike the textbook A^N/N! sums.
    ab = a * b_prev
    return ab / (k + ab)


def _pw_from_b(n: int, a: float, b: float) -> float:
    """P_w from B(N, A) for a stable queue (N > A)."""
    # Rounding can push the ratio a hair above 1 when N is just above A.
    return min(1.0, n * b / (n - a * (1.0 - b)))


def _sl_from_pw(n: int, a: float, pw: float, aht: float, t: float) -> float:
    """Service level from P_w for a stable queue (N > A)."""
    return 1.0 - pw * math.exp(-(n - a) * t / aht)


def erlang_b(n: int, a: float) -> float:
    """Blocking probability B(N, A) for N servers and offered load A erlangs (stable recurrence)."""
    _check_load(n, a)
    b = 1.0
    for k in range(1, n + 1):
        b = _next_b(k, a, b)
    return b


def erlang_c(n: int, a: float) -> float:
    """P_w: probability a call waits, N agents, load A. Returns 1.0 when N <= A (overloaded)."""
    _check_load(n, a)
    if n <= a:
        # The queue grows without bound, so every call eventually waits.
        return 1.0
    if a == 0:
        return 0.0
    return _pw_from_b(n, a, erlang_b(n, a))


def service_level(n: int, a: float, aht: float, t: float) -> float:
    """Share answered within t seconds: 1 - P_w * exp(-(N - A) * t / aht); 0.0 when N <= A."""
    _check_load(n, a)
    _check_times(aht, t)
    if n <= a:
        return 0.0
    return _sl_from_pw(n, a, erlang_c(n, a), aht, t)


def asa(n: int, a: float, aht: float) -> float | None:
    """Mean speed of answer: P_w * aht / (N - A); None when N <= A (infinite)."""
    _check_load(n, a)
    _check_times(aht, 0.0)
    if n <= a:
        return None
    return erlang_c(n, a) * aht / (n - a)


def agents_required(a: float, aht: float, t: float, target: float, max_agents: int = 10_000) -> int | None:
    """The smallest N whose service_level(N, A, aht, t) >= target; None if max_agents does not suffice."""
    _check_load(0, a)
    _check_times(aht, t)
    if target <= 0.0:
        # service_level is never negative, so even N = 0 meets such a target.
        return 0
    if target > 1.0:
        # service_level never exceeds 1; searching would only burn max_agents steps.
        return None
    # Every N <= A has service level 0, so the first candidate is floor(A) + 1.
    n = math.floor(a) + 1
    if n > max_agents:
        return None
    # B is carried from one N to the next: one recurrence step per candidate
    # keeps the whole search O(N) instead of O(N^2).
    b = erlang_b(n, a)
    while True:
        if _sl_from_pw(n, a, _pw_from_b(n, a, b), aht, t) >= target:
            return n
        if n >= max_agents:
            return None
        n += 1
        b = _next_b(n, a, b)


@dataclass(frozen=True)
class Forecast:
    """The forecast gauges of one queue; None means unknown (or, for ASA, infinite)."""

    arrival_rate_per_hour: float
    predicted_service_level: float | None
    predicted_asa_seconds: float | None
    agents_required: int | None


def forecast(
    offered_last_15m: int,
    aht_seconds: float | None,
    staffed: int,
    sl_threshold_seconds: float,
    sl_target: float,
) -> Forecast:
    """The forecast gauges of one queue: λ from the last 15 minutes' offers, A = λ·AHT, N = staffed agents."""
    if offered_last_15m < 0:
        raise ValueError(f"offered calls must be >= 0, got {offered_last_15m}")
    if staffed < 0:
        raise ValueError(f"staffed agents must be >= 0, got {staffed}")
    rate_per_hour = float(offered_last_15m * WINDOWS_PER_HOUR)
    if aht_seconds is None or aht_seconds <= 0:
        # Without a handling time (no call finished yet) there is no load to model.
        return Forecast(rate_per_hour, None, None, None)
    if offered_last_15m == 0:
        # No arrivals: nobody waits, and no agent is needed to keep it that way.
        return Forecast(rate_per_hour, 1.0, 0.0, 0)
    lam = offered_last_15m / WINDOW_SECONDS
    load = lam * aht_seconds
    required = agents_required(load, aht_seconds, sl_threshold_seconds, sl_target)
    if staffed <= load:
        # Overloaded (or nobody staffed): the queue grows without bound.
        return Forecast(rate_per_hour, 0.0, None, required)
    return Forecast(
        rate_per_hour,
        service_level(staffed, load, aht_seconds, sl_threshold_seconds),
        asa(staffed, load, aht_seconds),
        required,
    )
