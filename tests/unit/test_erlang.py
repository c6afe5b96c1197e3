"""The Erlang C forecast against an independent implementation, textbook identities and the gauge rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# A declared test dependency (the `test` extra): a missing reference must fail
# the run, never skip it, or the comparison would silently stop being checked.
from pyworkforce.queuing import ErlangC

from agents.erlang import (
    Forecast,
    agents_required,
    asa,
    erlang_b,
    erlang_c,
    forecast,
    service_level,
)

TOL = 1e-6
REF_INTERVAL = 3600.0  # seconds; pyworkforce wants transactions per interval, in aht's time unit

# (λ calls/second, AHT seconds, N agents, T seconds); every point has N > A = λ·AHT.
POINTS: list[tuple[float, float, int, float]] = [
    (0.5 / 180, 180.0, 1, 20.0),  # small load: A = 0.5, N = 1
    (100 / 1800, 180.0, 12, 20.0),  # typical: 100 calls / 30 min, A = 10
    (200 / 300, 300.0, 220, 30.0),  # large: A = 200, N = 220
    (200 / 300, 300.0, 220, 0.0),  # T = 0, large
    (100 / 1800, 180.0, 11, 0.0),  # T = 0, typical
    (0.01 / 60, 60.0, 1, 5.0),  # almost idle: A = 0.01
    (1 / 240, 240.0, 2, 15.0),  # A = 1
    (2.5 / 200, 200.0, 3, 15.0),  # A = 2.5
    (4.8 / 300, 300.0, 5, 60.0),  # close to overload: A = 4.8, N = 5
    (7.3 / 420, 420.0, 9, 120.0),  # A = 7.3, long threshold
    (30 / 150, 150.0, 40, 0.0),  # T = 0, comfortable staffing
    (50 / 240, 240.0, 55, 20.0),  # A = 50
    (50 / 240, 240.0, 70, 10.0),  # A = 50, overstaffed
    (100 / 360, 360.0, 101, 20.0),  # A = 100, one agent of headroom
    (1000 / 300, 300.0, 1030, 20.0),  # A = 1000, thousands-scale
    (12.6 / 180, 180.0, 14, 30.0),  # fractional A above .5, where the reference's search start differs
]


def _ref(lam: float, aht: float, t: float) -> ErlangC:
    """The reference model for the same λ, AHT and threshold (all in seconds)."""
    # pyworkforce calls the SL threshold `asa` and rejects 0, so T = 0 is checked
    # through its waiting probability instead (SL(T=0) = 1 - P_w).
    return ErlangC(transactions=lam * REF_INTERVAL, aht=aht, asa=t if t > 0 else 1.0, interval=REF_INTERVAL)


@pytest.mark.parametrize(("lam", "aht", "n", "t"), POINTS)
def test_matches_pyworkforce(lam: float, aht: float, n: int, t: float) -> None:
    ref = _ref(lam, aht, t)
    a = lam * aht
    assert ref.intensity == pytest.approx(a, rel=1e-12)

    ref_pw = ref.waiting_probability(n)
    assert abs(erlang_c(n, a) - ref_pw) <= TOL

    ref_sl = ref.service_level(n) if t > 0 else 1.0 - ref_pw
    assert abs(service_level(n, a, aht, t) - ref_sl) <= TOL

    # pyworkforce has no ASA; this is the textbook formula on the reference's P_w.
    ours_asa = asa(n, a, aht)
    assert ours_asa is not None
    assert abs(ours_asa - ref_pw * aht / (n - ref.intensity)) <= TOL * max(1.0, aht)


@pytest.mark.parametrize(("lam", "aht", "n", "t"), [p for p in POINTS if p[3] > 0])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_agents_required_matches_pyworkforce(lam: float, aht: float, n: int, t: float, target: float) -> None:
    a = lam * aht
    ours = agents_required(a, aht, t, target)
    assert ours is not None
    got = _ref(lam, aht, t).required_positions(service_level=target)["raw_positions"]
    # pyworkforce starts its search at round(A + 1) rather than floor(A) + 1, so
    # when frac(A) > 0.5 it can overshoot by one; above that start both agree.
    assert got == max(ours, round(a + 1))


# --- textbook identities -----------------------------------------------------


@pytest.mark.parametrize("a", [0.0, 0.01, 0.5, 1.0, 3.7, 50.0, 1e4])
def test_erlang_b_one_server(a: float) -> None:
    assert erlang_b(1, a) == pytest.approx(a / (1 + a), rel=1e-15, abs=0.0)


def test_erlang_b_zero_servers_blocks_everything() -> None:
    assert erlang_b(0, 3.0) == 1.0


@pytest.mark.parametrize(("n", "a"), [(1, 0.5), (5, 4.8), (12, 10.0), (40, 30.0), (220, 200.0), (3000, 2950.0)])
def test_erlang_c_at_least_erlang_b(n: int, a: float) -> None:
    assert erlang_c(n, a) >= erlang_b(n, a)


def test_service_level_increases_with_agents_and_threshold() -> None:
    a, aht = 10.0, 180.0
    by_n = [service_level(n, a, aht, 20.0) for n in range(11, 40)]
    assert all(x < y for x, y in zip(by_n, by_n[1:]) if y < 1.0)
    by_t = [service_level(12, a, aht, t) for t in (0.0, 5.0, 20.0, 60.0, 300.0)]
    assert all(x < y for x, y in zip(by_t, by_t[1:]))


def test_asa_decreases_with_agents() -> None:
    values = [asa(n, 10.0, 180.0) for n in range(11, 40)]
    assert all(v is not None for v in values)
    assert all(x > y for x, y in zip(values, values[1:]))  # type: ignore[operator]


@pytest.mark.parametrize(("n", "a"), [(0, 0.0), (0, 2.0), (5, 5.0), (10, 12.5)])
def test_overloaded_queue(n: int, a: float) -> None:
    assert erlang_c(n, a) == 1.0
    assert service_level(n, a, 180.0, 20.0) == 0.0
    assert asa(n, a, 180.0) is None


@pytest.mark.parametrize("n", [1, 2, 50])
def test_no_load_means_no_wait(n: int) -> None:
    assert erlang_b(n, 0.0) == 0.0
    assert erlang_c(n, 0.0) == 0.0
    assert service_level(n, 0.0, 180.0, 0.0) == 1.0
    assert asa(n, 0.0, 180.0) == 0.0


def test_no_factorial_overflow_for_thousands_of_agents() -> None:
    b = erlang_b(5000, 4900.0)
    c = erlang_c(5000, 4900.0)
    assert 0.0 < b < 1.0 and 0.0 < c < 1.0 and math.isfinite(c)


@pytest.mark.parametrize(
    ("n", "a", "aht", "t"),
    [(-1, 1.0, 180.0, 20.0), (1, -0.1, 180.0, 20.0), (1, math.nan, 180.0, 20.0), (2, 1.0, 0.0, 20.0), (2, 1.0, 180.0, -1.0)],
)
def test_rejects_meaningless_inputs(n: int, a: float, aht: float, t: float) -> None:
    with pytest.raises(ValueError):
        service_level(n, a, aht, t)


# --- agents_required -----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "aht", "t", "target"),
    [(0.5, 180.0, 20.0, 0.8), (10.0, 180.0, 20.0, 0.8), (10.0, 180.0, 0.0, 0.9), (200.0, 300.0, 30.0, 0.95), (2.6, 200.0, 15.0, 0.5)],
)
def test_agents_required_is_the_smallest_sufficient(a: float, aht: float, t: float, target: float) -> None:
    n = agents_required(a, aht, t, target)
    assert n is not None
    assert service_level(n, a, aht, t) >= target
    assert service_level(n - 1, a, aht, t) < target


def test_agents_required_none_when_cap_too_small() -> None:
    n = agents_required(10.0, 180.0, 20.0, 0.8)
    assert n is not None
    assert agents_required(10.0, 180.0, 20.0, 0.8, max_agents=n) == n
    assert agents_required(10.0, 180.0, 20.0, 0.8, max_agents=n - 1) is None
    assert agents_required(10.0, 180.0, 20.0, 0.8, max_agents=5) is None  # below the load itself
    assert agents_required(10.0, 180.0, 20.0, 1.01) is None  # no staffing exceeds 100 %


def test_agents_required_zero_load() -> None:
    # By definition: N = 0 has SL 0 (N <= A), one agent already answers everyone at once.
    assert agents_required(0.0, 180.0, 20.0, 0.8) == 1
    assert agents_required(0.0, 180.0, 20.0, 0.0) == 0


def test_agents_required_for_thousands() -> None:
    # Speed is a benchmark's business, not a test's; this checks the large-N search stays exact.
    n = agents_required(5000.0, 300.0, 20.0, 0.95)
    assert n is not None and n > 5000
    assert service_level(n, 5000.0, 300.0, 20.0) >= 0.95 > service_level(n - 1, 5000.0, 300.0, 20.0)


# --- forecast ---------------------------------------------------------------------


@pytest.mark.parametrize("aht", [None, 0.0, -5.0])
@pytest.mark.parametrize("offered", [0, 37])
def test_forecast_without_aht(aht: float | None, offered: int) -> None:
    assert forecast(offered, aht, 10, 20.0, 0.8) == Forecast(offered * 4.0, None, None, None)


@pytest.mark.parametrize("staffed", [0, 3])
def test_forecast_without_offers(staffed: int) -> None:
    assert forecast(0, 180.0, staffed, 20.0, 0.8) == Forecast(0.0, 1.0, 0.0, 0)


@pytest.mark.parametrize("staffed", [0, 5, 10])
def test_forecast_overloaded(staffed: int) -> None:
    # 50 offers / 15 min with AHT 180 s is A = 10 erlangs.
    f = forecast(50, 180.0, staffed, 20.0, 0.8)
    assert f.arrival_rate_per_hour == 200.0
    assert f.predicted_service_level == 0.0
    assert f.predicted_asa_seconds is None
    assert f.agents_required == agents_required(10.0, 180.0, 20.0, 0.8)


def test_forecast_normal() -> None:
    f = forecast(50, 180.0, 12, 20.0, 0.8)
    assert isinstance(f.arrival_rate_per_hour, float) and f.arrival_rate_per_hour == 200.0
    assert f.predicted_service_level == pytest.approx(service_level(12, 10.0, 180.0, 20.0), rel=1e-12)
    assert f.predicted_asa_seconds == pytest.approx(asa(12, 10.0, 180.0), rel=1e-12)
    assert f.agents_required == agents_required(10.0, 180.0, 20.0, 0.8)
    ref = ErlangC(transactions=50, aht=180.0, asa=20.0, interval=900)
    assert abs(f.predicted_service_level - ref.service_level(12)) <= TOL  # type: ignore[operator]


@given(st.integers(min_value=0, max_value=10_000))
def test_forecast_rate_is_offers_times_four(offered: int) -> None:
    assert forecast(offered, 180.0, 20, 20.0, 0.8).arrival_rate_per_hour == offered * 4


# --- properties ---------------------------------------------------------------------


@st.composite
def load_points(draw: st.DrawFn) -> tuple[int, float]:
    """N in 1..500 and A in (0, 1.5 N)."""
    n = draw(st.integers(min_value=1, max_value=500))
    a = draw(st.floats(min_value=0.0, max_value=n * 1.5, exclude_min=True, allow_nan=False))
    return n, a


@settings(max_examples=300, deadline=None)
@given(load_points())
def test_erlang_b_and_c_are_probabilities(point: tuple[int, float]) -> None:
    n, a = point
    b, c = erlang_b(n, a), erlang_c(n, a)
    assert math.isfinite(b) and 0.0 <= b <= 1.0
    assert math.isfinite(c) and 0.0 <= c <= 1.0
