"""Settings for secrets, TLS and SASL: _FILE secrets, redaction, and the wiring into each client library."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import trustme
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from ccmon.errors import ConfigError
from ccmon.settings import SecretEnviron, Settings, child_environment, load_settings, redact_url
from ccmon.web import access_class, access_summary, bearer, is_loopback
from ccmon.wallboard import match_token
from streams.app import broker_credentials


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("CCMON_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_secrets_come_from_files_stripped(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in [("READ_TOKENS", "r1, r2"), ("INGEST_TOKENS", "i1"), ("REDIS_PASSWORD", "p w"),
                        ("KAFKA_SASL_PASSWORD", "k"), ("REDIS_URL", "redis://:u@h:1/0")]:
        (tmp_path / name).write_text(f"  {value}\n")
        clean_env.setenv(f"CCMON_{name}_FILE", str(tmp_path / name))
    clean_env.setenv("CCMON_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("CCMON_KAFKA_SASL_USERNAME", "svc")
    s = load_settings()
    assert s.read_token_list() == ["r1", "r2"] and s.ingest_tokens == "i1" and s.redis_password == "p w"
    assert s.kafka_sasl_password == "k" and s.redis_url == "redis://:u@h:1/0"
    assert s.redis_options() == {"password": "p w"}
    shown = repr(s) + str(s.redacted())
    for secret in ("r1", "i1", "p w", "'k'", ":u@"):
        assert secret not in shown
    assert s.redacted()["redis_url"] == "redis://***@h:1/0"


@pytest.mark.parametrize("env,fragment", [
    ({"CCMON_REDIS_PASSWORD": "a", "CCMON_REDIS_PASSWORD_FILE": "/x"}, "both CCMON_REDIS_PASSWORD and"),
    ({"CCMON_INGEST_TOKENS_FILE": "/nonexistent/t"}, "CCMON_INGEST_TOKENS_FILE=/nonexistent/t cannot be read"),
    ({"CCMON_READ_TOKENS": "same", "CCMON_INGEST_TOKENS": "other,same"}, "different tokens"),
    ({"CCMON_WALLBOARD_TOKEN": "same", "CCMON_INGEST_TOKENS": "same"}, "different tokens"),
    ({"CCMON_REDIS_URL": "redis://h:1/0", "CCMON_REDIS_TLS_CA_FILE": "/ca"}, "not a rediss:// URL"),
    ({"CCMON_REDIS_URL": "rediss://h:1/0", "CCMON_REDIS_TLS_CERT_FILE": "/c"}, "CCMON_REDIS_TLS_KEY_FILE"),
    ({"CCMON_REDIS_PASSWORD": "p"}, "the embedded Redis has no password"),
    ({"CCMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs CCMON_KAFKA_SASL_USERNAME"),
    ({"CCMON_KAFKA_SASL_USERNAME": "u", "CCMON_KAFKA_SASL_PASSWORD": "secret-9"}, "set it to SASL_SSL"),
    ({"CCMON_KAFKA_SSL_CA_FILE": "/ca"}, "set it to SSL or SASL_SSL"),
    ({"CCMON_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CCMON_KAFKA_SECURITY_PROTOCOL"),
    ({"CCMON_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CCMON_KAFKA_SASL_MECHANISM"),
])
def test_bad_security_settings_say_what_to_fix(clean_env: pytest.MonkeyPatch, env: dict[str, str],
                                               fragment: str) -> None:
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value)
    assert "secret-9" not in str(info.value)


def test_a_file_beats_an_empty_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "t").write_text("r9\n")
    clean_env.setenv("CCMON_READ_TOKENS", "")  # what compose's ${CCMON_READ_TOKENS:-} gives
    clean_env.setenv("CCMON_READ_TOKENS_FILE", str(tmp_path / "t"))
    assert load_settings().read_token_list() == ["r9"]


def test_child_environment_replaces_a_file_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CCMON_REDIS_URL_FILE", "/run/secrets/url")
    env = child_environment(redis_url="redis://h:1/0")
    assert env["CCMON_REDIS_URL"] == "redis://h:1/0" and "CCMON_REDIS_URL_FILE" not in env


def test_receiver_secrets_may_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("https://hooks.example/abc\n")
    env = SecretEnviron({"HOOK_URL_FILE": str(tmp_path / "hook"), "PLAIN": "v"})
    assert env.get("HOOK_URL") == "https://hooks.example/abc" and env.get("PLAIN") == "v"
    assert env.get("MISSING", "") == ""
    with pytest.raises(ConfigError, match="BAD_FILE=/nope cannot be read"):
        SecretEnviron({"BAD_FILE": "/nope"}).get("BAD")


@pytest.mark.parametrize("url,shown", [
    ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
    ("rediss://user:pw@h:6379/1", "rediss://user:***@h:6379/1"),
    ("redis://h:6379/0?password=pw&socket_timeout=3", "redis://h:6379/0?password=***&socket_timeout=3"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("unix://:pw@/run/redis.sock", "unix://***@/run/redis.sock"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    leaf = ca.issue_cert("ccmon.test")
    d = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def test_redis_tls_options_reach_redis_py(pki: dict[str, str]) -> None:
    s = Settings(redis_url="rediss://h:6380/0", redis_tls_ca_file=pki["ca"], redis_tls_cert_file=pki["cert"],
                 redis_tls_key_file=pki["key"], redis_password="pw")
    client = aioredis.Redis.from_url(s.redis_url, **s.redis_options())  # type: ignore[arg-type]
    kw = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is aioredis.SSLConnection
    assert (kw["ssl_ca_certs"], kw["ssl_certfile"], kw["ssl_keyfile"], kw["password"]) == (
        pki["ca"], pki["cert"], pki["key"], "pw")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_kafka_security_reaches_faust_aiokafka_and_kafka_python(protocol: str, pki: dict[str, str]) -> None:
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    s = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc" if sasl else None, kafka_sasl_password="pw" if sasl else None,
                 kafka_ssl_ca_file=pki["ca"] if tls else None, kafka_ssl_cert_file=pki["cert"] if tls else None,
                 kafka_ssl_key_file=pki["key"] if tls else None)
    opts = s.kafka_options()
    assert opts["security_protocol"] == protocol
    assert (opts.get("ssl_context") is not None) == tls
    assert opts.get("sasl_plain_password") == ("pw" if sasl else None)
    faust_auth = credentials_to_aiokafka_auth(broker_credentials(s)) if protocol != "PLAINTEXT" else None
    if faust_auth is not None:
        assert faust_auth["security_protocol"] == protocol
        assert faust_auth.get("sasl_mechanism") == ("SCRAM-SHA-512" if sasl else None)
        assert faust_auth.get("sasl_plain_password") == ("pw" if sasl else None)
        assert (faust_auth["ssl_context"] is not None) == tls
    async def build() -> AIOKafkaConsumer:  # what ccmon backfill builds (aiokafka wants a running loop)
        return AIOKafkaConsumer(bootstrap_servers="h:9093", **opts)

    consumer = asyncio.run(build())
    assert consumer._client._security_protocol == protocol
    from kafka.producer.kafka import KafkaProducer

    assert set(opts) <= set(KafkaProducer.DEFAULT_CONFIG)  # kafka-python (producer, admin) takes the same keys


def test_kafka_tls_files_that_do_not_load_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="CCMON_KAFKA_SSL_CA_FILE"):
        s.kafka_options()


@pytest.mark.parametrize("path,cls", [
    ("/metrics", "public"), ("/metrics/worker", "public"), ("/health", "public"), ("/api/events", "ingest"),
    ("/api/webhooks/zendesk", "ingest"), ("/api/snapshot", "read"), ("/wallboard", "read"), ("/", "read"),
    ("/health/", "read"), ("/metrics/", "read"), ("/api/eventsX", "read"), ("/router/", "read"),
])
def test_access_class_denies_by_default(path: str, cls: str) -> None:
    assert access_class(path) == cls


def test_tokens_match_in_constant_time_helpers() -> None:
    assert bearer({"Authorization": "bearer  t1 "}) == ["t1"] and bearer({"Authorization": "Basic x"}) == []
    assert match_token(["a", "b"], ["x", "b"]) == "b" and match_token(["a"], []) is None
    assert match_token(["a"], ["A"]) is None


def test_start_up_summary_warns_on_an_open_non_loopback_bind() -> None:
    safe = "\n".join(access_summary(Settings()))
    assert "http://127.0.0.1:8640" in safe and "WARNING" not in safe and "read:" in safe and "closed" in safe
    loud = "\n".join(access_summary(Settings(http_host="0.0.0.0", ingest_open=True)))
    assert "WARNING: listening on 0.0.0.0 with no read token" in loud and "ingest open" in loud
    guarded = "\n".join(access_summary(Settings(http_host="0.0.0.0", read_tokens="r", ingest_tokens="i")))
    assert "WARNING" not in guarded and "token-protected (1 read token)" in guarded
    assert is_loopback("::1") and is_loopback("127.0.0.2") and is_loopback("localhost") and not is_loopback("10.0.0.1")
