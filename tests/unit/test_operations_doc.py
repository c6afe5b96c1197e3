"""docs/operations.md stays true to the stack it describes.

Names are read from the code and the deploy files, never copied: the compose
services, the topics ccmon uses, the Prometheus jobs and their endpoints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccmon.settings import Settings
from streams.events import DOMAINS
from streams.topics import all_topics

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "operations.md"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# The global view and the per-process view (ccmon/web.py).
CCMON_PATHS = ("/metrics", "/metrics/worker")


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC_PATH.is_file(), "docs/operations.md is missing"
    return DOC_PATH.read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def ccmon_jobs() -> dict[str, str]:
    """job_name -> metrics_path of the scrape jobs that name one of ccmon's endpoints."""
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {j["job_name"]: j["metrics_path"] for j in prom["scrape_configs"] if j.get("metrics_path") in CCMON_PATHS}


def _default_settings() -> Settings:
    """Settings with the documented default prefix, whatever CCMON_TOPIC_PREFIX says here."""
    return Settings(topic_prefix=Settings.model_fields["topic_prefix"].default)


def test_the_doc_exists(doc: str) -> None:
    assert doc.startswith("# Running ccmon in production")


def test_every_compose_service_is_described(doc: str, compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services, "docker-compose.yml has no services"
    for name in services:
        assert f"`{name}`" in doc, name


def test_every_published_port_and_volume_is_mentioned(doc: str, compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert f"`{str(port).split(':')[0]}`" in doc, (name, port)
    for volume in compose.get("volumes", {}):
        assert f"`{volume}`" in doc, volume


def test_every_topic_ccmon_uses_is_listed(doc: str) -> None:
    settings = _default_settings()
    topics = [settings.topic(domain) for domain in DOMAINS] + [settings.deadletter_topic, settings.alerts_topic]
    assert topics == all_topics(settings), "streams.topics.all_topics and Settings disagree"
    assert settings.topic_prefix == "cc."
    for topic in topics:
        assert f"`{topic}`" in doc, topic


def test_both_endpoints_and_both_prometheus_jobs(doc: str, ccmon_jobs: dict[str, str]) -> None:
    assert sorted(ccmon_jobs.values()) == sorted(CCMON_PATHS), ccmon_jobs
    for path in CCMON_PATHS:
        assert f"`{path}`" in doc, path
    for job, path in ccmon_jobs.items():
        # The Prometheus table has one row per job: | `job` | `path` | ...
        assert f"| `{job}` | `{path}` |" in doc, f"no table row pairs job {job} with {path}"


def test_redis_persistence_matches_compose(doc: str, compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags.get("--appendonly") == "yes" and "appendonly yes" in doc
    assert f"appendfsync {flags['--appendfsync']}" in doc


def test_only_real_settings_and_deploy_paths(doc: str) -> None:
    from ccmon.settings import SECRET_FIELDS

    known = {"CCMON_" + name.upper() for name in Settings.model_fields} | {
        f"CCMON_{name.upper()}_FILE" for name in SECRET_FIELDS}
    for var in set(re.findall(r"CCMON_[A-Z_]+", doc)):
        assert var in known, f"{var} is not a setting in ccmon/settings.py"
    for path in set(re.findall(r"(?<![\w/])deploy/[\w./-]*\w", doc)):
        assert (ROOT / path).exists(), f"{path} does not exist"


def test_the_promtool_commands_name_real_files(doc: str) -> None:
    for line in doc.splitlines():
        m = re.match(r"promtool (?:check config|check rules|test rules) (deploy/\S+)", line)
        if m:
            assert (ROOT / m.group(1)).is_file(), line
    assert "promtool test rules deploy/prometheus/rules-tests/ccmon.rules.test.yml" in doc
