"""The evaluator lease and its fencing against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from agents.config import MetricsConfig
from alerts.config import AlertsConfig, builtin_rules
from alerts.engine import AlertState, Notification
from ccmon.alert_store import AlertStore
from ccmon.alerting import AlertService
from ccmon.store import PREFIX, WINDOW_SUMS, Store
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def note() -> Notification:
    return Notification(kind="firing", rule="R", queue="q", severity="warning", summary="s", description="d",
                        runbook_url="", value=1.0, threshold=0.0, started_ms=0, at_ms=0, receivers=("hook",))


def test_one_holder_and_a_stale_holder_cannot_write(env: Env) -> None:
    async def scenario() -> None:
        store = Store(env.redis_url, MetricsConfig())
        a, b = AlertStore(store), AlertStore(store)
        try:
            token_a = await a.acquire("worker-a", ttl_s=0.3)
            assert token_a is not None
            assert await b.acquire("worker-b", ttl_s=0.3) is None  # held
            assert await a.acquire("worker-a", ttl_s=0.3) == token_a  # renewal keeps the fence
            assert await a.commit(token_a, [AlertState("R", "q", status="firing", fired_ms=1)], [],
                                  [("hook", note())])
            await asyncio.sleep(0.5)  # a pauses past its lease; b takes over with a higher fence
            token_b = await b.acquire("worker-b", ttl_s=5)
            assert token_b is not None and int(token_b.split("|")[1]) > int(token_a.split("|")[1])
            assert not await a.commit(token_a, [AlertState("R", "q")], [], [("hook", note())])  # fenced
            states = await b.states()
            assert states["R|q"].status == "firing"  # the stale write did not land
            head = await b.head("hook")
            assert head is not None and Notification.decode(head) == note()
            assert not await a.ack(token_a, "hook", head, "sent")  # nor may a stale holder drop it
            assert await b.ack(token_b, "hook", head, "sent")
            assert await b.head("hook") is None
            assert (await b.delivery_status(["hook"]))["hook"]["sent"] == 1
            await b.release(token_b)
            assert await a.acquire("worker-a", ttl_s=1) is not None  # released: taken at once
        finally:
            await store.close()

    asyncio.run(scenario())


def test_an_evaluator_without_rules_reads_no_snapshot_and_drops_leftover_states(env: Env) -> None:
    """A worker whose alerts YAML has no rules pays nothing for evaluating: no snapshot read, once a second, while
    commits flow (a read would bring the window sums in Redis to now, creating them in this fresh db). A state its
    rules no longer produce is still dropped."""
    async def window_sums(store: Store) -> list[bytes]:
        return [k async for k in store.redis.scan_iter(match=f"{PREFIX}{WINDOW_SUMS}:*")]

    async def scenario() -> None:
        store = Store(env.redis_url, MetricsConfig())
        try:
            without = AlertService(store, AlertsConfig(rules=()), owner="without")
            without.token = await without.astore.acquire("without", ttl_s=5)
            assert without.token is not None
            assert await without.astore.commit(without.token, [AlertState("gone-rule", "q", status="firing",
                                                                          fired_ms=1)], [], [])
            assert await without.evaluate_once() == []
            assert await window_sums(store) == []  # no snapshot was read
            assert await without.astore.states() == {}  # the leftover state is gone
            assert without.evaluations == 1
            await without.astore.release(without.token)

            with_rules = AlertService(store, AlertsConfig(rules=builtin_rules()), owner="with-rules")
            with_rules.token = await with_rules.astore.acquire("with-rules", ttl_s=5)
            assert with_rules.token is not None
            await with_rules.evaluate_once()
            assert await window_sums(store) != []  # the control: rules read the snapshot
        finally:
            await store.close()

    asyncio.run(scenario())
