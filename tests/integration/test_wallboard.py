"""The wallboard in real headless Chromium against the real stack with simulated traffic.

Screenshots of the normal, TV and breach states go to test-artifacts/.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from ccmon.services import free_port
from tests.integration.conftest import ARTIFACTS, Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import traffic
from tests.tools import require_tool

pytestmark = pytest.mark.integration

ALERTS = """
evaluation_interval: 1s
overrides:
  CcmonServiceLevelBelowTarget: {for: 0s}
"""
CONFIG = """
windows: [15m, 1h]
defaults: {sl_target: 0.8, asa_target_seconds: 30}
"""
FIELDS = {  # tile field -> (snapshot window, snapshot field)
    "calls_waiting": ("now", "calls_waiting"),
    "longest_wait_seconds": ("now", "longest_wait_seconds"),
    "service_level_today": ("today", "service_level"),
    "service_level_15m": ("15m", "service_level"),
    "sl_target": ("now", "sl_target"),
    "asa_seconds": ("15m", "asa_seconds"),
    "abandoned_today": ("today", "abandoned"),
    "abandon_rate_15m": ("15m", "abandon_rate"),
    "agents.available": ("now", "agents_available"),
    "agents.on_call": ("now", "agents_on_call"),
    "agents.wrap_up": ("now", "agents_wrap_up"),
    "agents.away": ("now", "agents_away"),
    "agents.staffed": ("now", "agents_staffed"),
    "predicted_service_level": ("now", "predicted_service_level"),
    "agents_required": ("now", "agents_required"),
}


def chrome() -> Any:
    """Headless Chromium from Debian, driven through its own chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = require_tool("chromium", "Debian's chromium package")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1920,1080", "--enable-precise-memory-info", "--hide-scrollbars"):
        opts.add_argument(arg)
    service = Service(executable_path=require_tool("chromedriver", "Debian's chromium-driver package"))
    return webdriver.Chrome(options=opts, service=service)


@pytest.fixture
def board(env: Env) -> Iterator[tuple[Env, str, Any]]:
    """A worker with 30 minutes of traffic behind it, and a browser."""
    env.config = env.tmp / "ccmon.yaml"
    env.config.write_text(CONFIG)
    (env.tmp / "alerts.yaml").write_text(ALERTS)
    port = free_port()
    env.port = port  # type: ignore[attr-defined]
    _, base = env.start_worker(alerts=str(env.tmp / "alerts.yaml"), http_port=str(port))
    history = traffic(seed=3, now=time.time() - 2, minutes=30, rate=600)
    res = env.ccmon("send", str(write_jsonl(env.tmp / "history.jsonl", history)))
    assert res.returncode == 0, res.stderr.decode()
    wait_for(lambda: env.stats().get("consumed", 0) >= len(history), 90, "history to be committed")
    driver = chrome()
    try:
        yield env, base, driver
    finally:
        logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
        (ARTIFACTS / "wallboard-console.json").parent.mkdir(exist_ok=True)
        (ARTIFACTS / "wallboard-console.json").write_text(json.dumps(logs, indent=1))
        driver.quit()


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"wallboard-{name}.png"
    driver.save_screenshot(str(path))
    return path


def state(driver: Any) -> dict[str, Any]:
    """The page's last payload and every tile's displayed raw values, read in one go."""
    return driver.execute_script("""
        const tiles = {};
        for (const t of document.querySelectorAll('section.tile')) {
          const f = {};
          for (const e of t.querySelectorAll('[data-field]')) f[e.dataset.field] = e.dataset.value;
          tiles[t.dataset.queue] = {status: t.dataset.status, fields: f};
        }
        const c = window.ccmon || {};
        return {tiles, payload: c.lastPayload || null, messages: c.messages || 0, loadedAt: c.loadedAt,
                health: document.body.dataset.health, navigations: performance.getEntriesByType('navigation').length,
                alerts: document.getElementById('alerts') ? document.getElementById('alerts').dataset.count : null,
                header: document.body.innerText.slice(0, 400)};
    """)


def snapshot_at(base: str, at: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/api/snapshot?at={at}", timeout=10) as r:
        return json.load(r)  # type: ignore[no-any-return]


def calls(prefix: str, n: int, wait_s: float, outcome: str, end: float) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out.append({"event_id": f"{prefix}o{i}", "type": "call.offered", "ts": end - wait_s, "call_id": f"{prefix}{i}",
                    "queue": "sales"})
        if outcome:
            extra = {"agent_id": "sales-a01"} if outcome == "call.answered" else {}
            out.append({"event_id": f"{prefix}x{i}", "type": outcome, "ts": end, "call_id": f"{prefix}{i}",
                        "queue": "sales", **extra})
    return out


def test_the_wallboard_lives(board: tuple[Env, str, Any]) -> None:
    env, base, driver = board
    driver.get(base + "/wallboard")
    wait_for(lambda: state(driver)["messages"] >= 2 and state(driver)["tiles"], 30, "tiles from the stream")

    # Tiles equal /api/snapshot at the payload's own instant.
    s = state(driver)
    assert set(s["tiles"]) == {"sales", "support", "billing"}
    snap = snapshot_at(base, s["payload"]["generated_at"])
    for queue, tile in s["tiles"].items():
        view = snap["queues"][queue]
        for field, (window, key) in FIELDS.items():
            assert field in tile["fields"], (queue, field)
            assert json.loads(tile["fields"][field]) == view[window][key], (queue, field)
    assert s["health"] == "live"
    shot(driver, "normal")

    # Values update without a reload: three calls start waiting in sales.
    before = json.loads(s["tiles"]["sales"]["fields"]["calls_waiting"])
    res = env.ccmon("send", str(write_jsonl(env.tmp / "waiting.jsonl", calls("w", 3, 0, "", time.time()))))
    assert res.returncode == 0
    wait_for(lambda: json.loads(state(driver)["tiles"]["sales"]["fields"]["calls_waiting"]) == before + 3, 20,
             "the tile to show three more waiting calls")
    after = state(driver)
    assert after["loadedAt"] == s["loadedAt"] and after["navigations"] == 1

    # A breach turns the tile red and raises the banner: sales callers abandon after two minutes.
    res = env.ccmon("send", str(write_jsonl(env.tmp / "breach.jsonl",
                                            calls("b", 40, 120, "call.abandoned", time.time() - 1))))
    assert res.returncode == 0
    wait_for(lambda: state(driver)["tiles"]["sales"]["status"] == "breach", 20, "the sales tile to turn red")
    wait_for(lambda: int(state(driver)["alerts"] or 0) >= 1, 20, "the alert banner")

    def banner() -> list[str]:
        return driver.execute_script("return [...document.querySelectorAll('#alerts [data-alert]')]"  # type: ignore[no-any-return]
                                     ".map(e => e.dataset.alert)")

    # Another queue's alert may be up first: wait for the sales one (evaluations run at most once a second).
    wait_for(lambda: "CcmonServiceLevelBelowTarget|sales" in banner(), 20, "the sales alert in the banner")
    assert "BREACH" in driver.find_element("css selector", 'section.tile[data-queue="sales"]').text.upper()
    shot(driver, "breach")

    driver.get(base + "/wallboard?tv=1")
    wait_for(lambda: state(driver)["messages"] >= 1, 20, "the TV page")
    assert driver.execute_script("return document.body.classList.contains('tv') && "
                                 "document.documentElement.scrollHeight <= window.innerHeight + 1")
    shot(driver, "tv")

    # Killing the worker turns the header stale; restarting it recovers, on the same page.
    loaded = state(driver)["loadedAt"]
    env.workers[-1].kill()
    env.workers[-1].wait(10)
    wait_for(lambda: state(driver)["health"] in ("stale", "reconnecting"), 20, "the header to go stale")
    assert "stale" in state(driver)["header"].lower()
    shot(driver, "stale")
    env.start_worker(alerts=str(env.tmp / "alerts.yaml"), http_port=str(env.port))  # type: ignore[attr-defined]
    wait_for(lambda: state(driver)["health"] == "live", 60, "the header to recover")
    assert state(driver)["loadedAt"] == loaded


def test_token_security_headers_and_escaping(env: Env) -> None:
    env.extra_env = {"CCMON_WALLBOARD_TOKEN": "s3cret-token"}
    _, base = env.start_worker()
    for path in ("/wallboard", "/wallboard/stream"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=5)
        assert info.value.code == 401
    with urllib.request.urlopen(base + "/wallboard?token=s3cret-token", timeout=5) as r:
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        page = r.read().decode()
    assert "http://" not in page and "https://" not in page  # everything is served by ccmon itself
    with urllib.request.urlopen(base + "/wallboard/stream?token=s3cret-token", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = r.readline() + r.readline() + r.readline()
        assert b"retry: 1000" in first or b"event: snapshot" in first

    # A hostile queue name is shown as text, never as markup.
    evil = '<img src=x onerror="window.pwned=1">'
    res = env.ccmon("send", "-", input=json.dumps({"event_id": "e1", "type": "call.offered", "ts": time.time(),
                                                   "call_id": "x1", "queue": evil}).encode())
    assert res.returncode == 0
    wait_for(lambda: env.stats().get("consumed", 0) >= 1, 30, "the event")
    driver = chrome()
    try:
        driver.get(base + "/wallboard?token=s3cret-token")
        wait_for(lambda: state(driver)["tiles"], 30, "the tile")
        assert evil in state(driver)["tiles"]
        assert driver.execute_script("return window.pwned === undefined && document.querySelectorAll('img').length "
                                     "=== 0")
    finally:
        driver.quit()
