"""The production-shaped stack in docker-compose.yml is wired together correctly.

No Docker engine is needed: the compose file and the files it mounts are parsed
and cross-checked (service names, hosts, ports, env var names, mounted paths).
When ``promtool`` / ``amtool`` are on PATH the Prometheus and Alertmanager
configs are also checked by the real tools; with ``CI=true`` a missing tool is
a failure, elsewhere a skip.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from ccmon.settings import SECRET_FIELDS, Settings, load_metrics_config, load_settings
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"

SERVICES = ("kafka", "redis", "ccmon", "prometheus", "alertmanager", "grafana")
SETTINGS_VARS = {"CCMON_" + name.upper() for name in Settings.model_fields} | {
    f"CCMON_{name.upper()}_FILE" for name in SECRET_FIELDS}  # secrets may come from files

_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# ---------------------------------------------------------------- helpers


def interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` with every variable unset (deterministic)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        op, default = m.group(2), m.group(3)
        if op in (":-", "-"):
            return default
        return ""

    return _INTERP.sub(sub, str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_cfg() -> dict[str, Any]:
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert isinstance(cfg, dict), f"{PROMETHEUS_YML} is not a YAML mapping"
    return cfg


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or list form), interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        raw = dict(pairs)
    return {str(k): interpolate(v) for k, v in raw.items()}


def command_args(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(service: dict[str, Any], name: str) -> str | None:
    """The value of ``--name=value`` (or ``--name value``) in a service's command."""
    args = command_args(service)
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v["target"])))
        else:
            parts = str(v).split(":")
            if len(parts) == 1:  # anonymous volume
                out.append(("", parts[0]))
            else:
                out.append((parts[0], parts[1]))
    return out


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the bind mounts relative to the repo."""
    return [(ROOT / interpolate(src), dst) for src, dst in mounts(service) if interpolate(src).startswith(".")]


def host_path_for(service: dict[str, Any], container_path: str) -> Path:
    """Where ``container_path`` comes from on the host, via the service's bind mounts."""
    best: tuple[Path, str] | None = None
    for host, target in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[1]):
                best = (host, target)
    assert best is not None, f"{container_path} is not bind-mounted from the repo"
    host, target = best
    rest = container_path[len(target):].lstrip("/")
    return host / rest if rest else host


def published_ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(published, target) for each port entry, short or long syntax."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((str(p.get("published", "")), str(p["target"])))
        else:
            spec = str(p).split("/")[0]
            parts = spec.split(":")
            if len(parts) == 1:
                out.append(("", parts[0]))
            else:
                out.append((parts[-2], parts[-1]))
    return out


def scrape_job(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = [j for j in cfg.get("scrape_configs") or [] if j.get("job_name") == name]
    assert len(jobs) == 1, f"prometheus.yml needs exactly one scrape job named {name}"
    return jobs[0]




# ---------------------------------------------------------------- services


def test_all_services_present(services: dict[str, Any]) -> None:
    missing = [s for s in SERVICES if s not in services]
    assert not missing, f"docker-compose.yml lacks services {missing}"


def test_kafka_runs_kraft_without_zookeeper(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    image = kafka["image"]
    assert image.startswith("apache/kafka:"), f"kafka must use a pinned apache/kafka image, got {image!r}"
    assert image.split(":", 1)[1] not in ("", "latest")
    env = env_of(kafka)
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert {"broker", "controller"} <= roles, "KRaft single node must be broker and controller"
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    ):
        assert env.get(key), f"kafka needs {key} for KRaft"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(key) == "1", f"single node: {key} must be 1"
    assert int(env.get("KAFKA_LOG_RETENTION_HOURS", "0")) >= 168, "keep at least a week for backfill"
    assert "healthcheck" in kafka and "kafka-broker-api-versions.sh" in str(kafka["healthcheck"]["test"])
    for name, svc in services.items():
        assert "zookeeper" not in name.lower() and "zookeeper" not in str(svc.get("image", "")).lower()
        assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env_of(svc))


def test_redis_persists_with_aof(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert flag(redis, "--appendonly") == "yes"
    assert flag(redis, "--appendfsync") == "everysec"
    assert any(target == "/data" and src and not src.startswith(".") for src, target in mounts(redis)), (
        "redis needs a named volume on /data"
    )
    assert "redis-cli" in str(redis["healthcheck"]["test"])


# ---------------------------------------------------------------- ccmon


def test_ccmon_points_at_the_kafka_and_redis_services(services: dict[str, Any]) -> None:
    env = env_of(services["ccmon"])
    kafka_env = env_of(services["kafka"])
    advertised = set()
    for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        advertised.add(listener.split("://", 1)[1])
    kafka_names = {"kafka", services["kafka"].get("hostname", "kafka")}
    for hostport in env["CCMON_KAFKA_BOOTSTRAP"].split(","):
        assert hostport in advertised, f"{hostport} is not an advertised listener of kafka ({advertised})"
        assert hostport.rsplit(":", 1)[0] in kafka_names

    url = urlparse(env["CCMON_REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis", "CCMON_REDIS_URL must name the redis service"
    redis_port = flag(services["redis"], "--port") or "6379"
    assert str(url.port or 6379) == redis_port

    assert env["CCMON_HTTP_HOST"] == "0.0.0.0", "in a container the HTTP endpoint must listen on 0.0.0.0"
    assert env["CCMON_PARTITIONS"] == kafka_env.get("KAFKA_NUM_PARTITIONS"), "topic partitions should agree"


def test_every_ccmon_variable_is_a_settings_field() -> None:
    used = set(re.findall(r"\bCCMON_[A-Z0-9_]+\b", COMPOSE.read_text()))
    assert used, "compose sets no CCMON_* variable"
    unknown = sorted(used - SETTINGS_VARS)
    assert not unknown, f"not fields of ccmon.settings.Settings: {unknown}"


def test_ccmon_environment_is_valid_settings(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CCMON_"):
            monkeypatch.delenv(key)
    env = env_of(services["ccmon"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.kafka_bootstrap == env["CCMON_KAFKA_BOOTSTRAP"]
    assert settings.partitions == 8
    assert str(settings.config) == "/etc/ccmon/ccmon.yaml"
    assert host_path_for(services["ccmon"], str(settings.config)) == DEPLOY / "ccmon" / "ccmon.yaml"


def test_ccmon_scales_out(services: dict[str, Any]) -> None:
    ccmon = services["ccmon"]
    assert int(ccmon["deploy"]["replicas"]) >= 2
    assert not ccmon.get("ports"), "replicas cannot share a fixed host port; use expose"
    assert "container_name" not in ccmon, "a fixed container_name prevents replicas"
    port = env_of(ccmon)["CCMON_HTTP_PORT"]
    assert port in {str(p) for p in ccmon.get("expose", [])}


def test_ccmon_build_command_and_dependencies(services: dict[str, Any]) -> None:
    ccmon = services["ccmon"]
    build = ccmon["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).is_file()
    assert command_args(ccmon) == ["worker"]  # logs to stdout; Docker's restart policy supervises it
    for dep in ("kafka", "redis"):
        assert ccmon["depends_on"][dep]["condition"] == "service_healthy"
        assert "healthcheck" in services[dep], f"{dep} needs a healthcheck for service_healthy"
    assert ccmon.get("restart") == "unless-stopped"


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f.startswith("python:") for f in froms)
    assert "3.11" in text and "-slim" in text
    assert re.search(r'^ENTRYPOINT \["ccmon"\]$', text, re.M)
    assert re.search(r'^CMD \["run"\]$', text, re.M)
    assert re.search(r"^EXPOSE 8640$", text, re.M)
    assert "HEALTHCHECK" in text and "/health" in text and "urllib" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerignore_keeps_what_pip_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", ".git", ".ccmon"):
        assert must in patterns
    for needed in ("pyproject.toml", "README.md", "ccmon", "agents", "streams", "alerts"):
        assert needed not in patterns, f".dockerignore must not exclude {needed}"


# ---------------------------------------------------------------- mounts, ports


def test_every_bind_mount_exists(services: dict[str, Any]) -> None:
    missing = [
        f"{name}: {host.relative_to(ROOT)}"
        for name, svc in services.items()
        for host, _ in bind_mounts(svc)
        if not host.exists()
    ]
    assert not missing, f"bind-mounted paths missing from the repo: {missing}"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for src, _ in mounts(svc):
            if src and not src.startswith((".", "/", "$")):
                assert src in declared, f"{name} uses undeclared volume {src}"


@pytest.mark.parametrize(("service", "port"), [("prometheus", "9090"), ("alertmanager", "9093"), ("grafana", "3000")])
def test_published_ports(services: dict[str, Any], service: str, port: str) -> None:
    assert (port, port) in published_ports(services[service])


def test_only_the_ui_services_publish_ports(services: dict[str, Any]) -> None:
    publishing = {name for name, svc in services.items() if svc.get("ports")}
    assert publishing == {"prometheus", "alertmanager", "grafana"}


# ---------------------------------------------------------------- prometheus


def test_prometheus_config_is_the_mounted_file(services: dict[str, Any]) -> None:
    prom = services["prometheus"]
    path = flag(prom, "--config.file")
    assert path, "prometheus needs --config.file"
    assert host_path_for(prom, path) == PROMETHEUS_YML
    assert "--web.enable-lifecycle" in command_args(prom)


def test_prometheus_scrapes_the_global_view_once(services: dict[str, Any], prometheus_cfg: dict[str, Any]) -> None:
    # /metrics is the same on every replica: one target, so each series exists once.
    job = scrape_job(prometheus_cfg, "ccmon")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "dns_sd_configs" not in job
    (static,) = job["static_configs"]
    assert static["targets"] == [f"ccmon:{env_of(services['ccmon'])['CCMON_HTTP_PORT']}"] and "ccmon" in services
    interval = job.get("scrape_interval") or prometheus_cfg["global"]["scrape_interval"]
    assert interval == "5s"
    jobs = {j["job_name"] for j in prometheus_cfg["scrape_configs"]}
    assert "prometheus" in jobs


def test_prometheus_scrapes_every_replica_for_liveness(services: dict[str, Any],
                                                       prometheus_cfg: dict[str, Any]) -> None:
    job = scrape_job(prometheus_cfg, "ccmon-worker")
    assert job["metrics_path"] == "/metrics/worker"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["ccmon"] and sd.get("type", "SRV") == "A"
    assert str(sd["port"]) == env_of(services["ccmon"])["CCMON_HTTP_PORT"]


def test_prometheus_sends_alerts_to_alertmanager(services: dict[str, Any], prometheus_cfg: dict[str, Any]) -> None:
    targets = [
        t
        for am in prometheus_cfg["alerting"]["alertmanagers"]
        for sc in am.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert ("9093", "9093") in published_ports(services["alertmanager"])


def _rule_files(services: dict[str, Any], cfg: dict[str, Any]) -> list[Path]:
    globs = cfg.get("rule_files") or []
    assert globs, "prometheus.yml has no rule_files"
    files: list[Path] = []
    for pattern in globs:
        directory, name_glob = posixpath.split(pattern)
        host_dir = host_path_for(services["prometheus"], directory)
        assert host_dir == RULES_DIR, f"{pattern} does not point at the mounted rules dir"
        matched = sorted(host_dir.glob(name_glob))
        assert matched, f"{pattern} matches no file in {host_dir}"
        files += matched
    return files


def test_rule_files_glob_matches_mounted_rules(services: dict[str, Any], prometheus_cfg: dict[str, Any]) -> None:
    files = _rule_files(services, prometheus_cfg)
    assert RULES_DIR / "ccmon.rules.yml" in files


def test_every_alert_rule_has_the_required_fields(services: dict[str, Any], prometheus_cfg: dict[str, Any]) -> None:
    alerts = {}
    for path in _rule_files(services, prometheus_cfg):
        doc = yaml.safe_load(path.read_text())
        assert doc and doc.get("groups"), f"{path.name} has no groups"
        for group in doc["groups"]:
            assert group.get("name") and group.get("rules"), f"{path.name}: a group needs name and rules"
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                where = f"{path.name}:{rule['alert']}"
                assert rule.get("expr"), f"{where} has no expr"
                assert rule.get("for"), f"{where} has no for"
                assert (rule.get("labels") or {}).get("severity"), f"{where} has no labels.severity"
                ann = rule.get("annotations") or {}
                for key in ("summary", "description", "runbook_url"):
                    assert ann.get(key), f"{where} has no annotations.{key}"
                alerts[rule["alert"]] = rule
    # Liveness is per replica (job ccmon-worker); job ccmon is the one global-view target.
    down = alerts["CcmonWorkerDown"]
    assert down["expr"].replace(" ", "") == 'up{job="ccmon-worker"}==0'
    assert down["for"] == "1m"
    assert down["labels"]["severity"] == "critical"
    assert down["annotations"]["runbook_url"].endswith("docs/runbooks.md#worker-down")
    endpoint = alerts["CcmonMetricsEndpointDown"]
    assert endpoint["expr"].replace(" ", "") == 'up{job="ccmon"}==0'
    assert endpoint["labels"]["severity"] == "critical"


def test_promtool_accepts_config_and_rules(tmp_path: Path, prometheus_cfg: dict[str, Any]) -> None:
    promtool = require_tool("promtool", "Debian package `prometheus`")
    cfg = dict(prometheus_cfg)
    cfg["rule_files"] = [str(RULES_DIR / posixpath.basename(p)) for p in prometheus_cfg["rule_files"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"promtool check config failed:\n{res.stdout}\n{res.stderr}"
    rules = sorted(RULES_DIR.glob("*.yml"))
    res = subprocess.run(
        [promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, f"promtool check rules failed:\n{res.stdout}\n{res.stderr}"


# ---------------------------------------------------------------- alertmanager, grafana, ccmon.yaml


def test_alertmanager_config(services: dict[str, Any]) -> None:
    am = services["alertmanager"]
    assert host_path_for(am, flag(am, "--config.file") or "/etc/alertmanager/alertmanager.yml") == ALERTMANAGER_YML
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text())
    names = [r["name"] for r in cfg["receivers"]]
    assert "default" in names and len(names) == len(set(names))
    assert cfg["route"]["receiver"] == "default"


def test_amtool_accepts_alertmanager_config() -> None:
    amtool = require_tool("amtool", "Debian package `prometheus-alertmanager`")
    res = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, f"amtool check-config failed:\n{res.stdout}\n{res.stderr}"


def test_grafana_provisioning(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert env_of(grafana)["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert "${GRAFANA_ADMIN_PASSWORD:-admin}" in str(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"])

    prov = host_path_for(grafana, "/etc/grafana/provisioning")
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus" and source["isDefault"] is True
    url = urlparse(source["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert (str(url.port), str(url.port)) in published_ports(services["prometheus"])

    dash = yaml.safe_load((prov / "dashboards" / "ccmon.yml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert host_path_for(grafana, provider["options"]["path"]) == DEPLOY / "grafana" / "dashboards"


def test_example_queue_config_loads() -> None:
    cfg = load_metrics_config(DEPLOY / "ccmon" / "ccmon.yaml")
    assert cfg.queue("sales").sl_threshold_seconds == 30
    assert cfg.queue("sales").timezone == "Europe/Berlin"
    assert cfg.defaults.sl_threshold_seconds == 20
