"""The deployment files agree with the code: Kubernetes, Docker/compose and the Grafana dashboard.

No cluster and no Docker engine here, so everything is checked by parsing:

* every YAML under deploy/k8s and deploy/docker parses (``yaml.safe_load_all``);
* the Kubernetes objects that must exist do, and agree with each other and with the config
  they mount: probe paths are pages of router_stream/app.py, probe/Service/Prometheus ports are
  ``worker.metrics_port``, the grace period outlasts ``worker.shutdown_grace_s``, the state dir
  lies on the persistent volume, every env var is one the config reads (or a key env it names),
  every ``api_key_env`` is filled from the Secret, the Secret holds placeholders only, container
  args parse with the real ``router-stream`` CLI parser;
* the Dockerfile has an exec-form ``ENTRYPOINT ["router-stream"]`` and a non-root ``USER``;
  compose has a KRaft broker, a topics one-shot, two workers and two model servers reachable at
  the URLs the compose routing config gives;
* every metric a Grafana panel queries exists in router_stream/metrics.py (PromQL names, with
  prometheus_client's ``_total``/``_bucket``/``_sum``/``_count`` suffixes), and every metric in
  metrics.py is on the dashboard.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from router_stream.cli import build_parser
from router_stream.config import RouterConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
DASHBOARD = ROOT / "deploy" / "grafana" / "router-stream.json"
APP_SOURCE = (ROOT / "router_stream" / "app.py").read_text()
CONFIG_SOURCE = "".join((ROOT / "router_stream" / name).read_text() for name in ("config.py", "config_sources.py"))

PLACEHOLDER = re.compile(r"^(|REPLACE_ME|CHANGE_ME|changeme|<[^<>]*>|\$\{[A-Z0-9_]+\})$")
GENERIC_ENV = re.compile(r"^(PYTHON[A-Z_]*|PATH|HOME|TZ|LANG|LC_[A-Z]+)$")


# ---------------------------------------------------------------------------------- helpers
def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in _yaml_files(directory):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def _k8s_objects() -> list[dict[str, Any]]:
    return [d for _, d in _docs(K8S) if d.get("kind") != "Kustomization"]


def _one(kind: str) -> dict[str, Any]:
    found = [o for o in _k8s_objects() if o.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def _pages() -> set[str]:
    """The web paths the worker serves (``@app.page("...")`` in router_stream/app.py)."""
    return set(re.findall(r"@app\.page\(\s*[\"']([^\"']+)[\"']", APP_SOURCE))


def _config_env_names() -> set[str]:
    """Env variables router_stream/config.py and config_sources.py read by name."""
    return set(re.findall(r"environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']", CONFIG_SOURCE))


def _env_allowed(name: str, config: RouterConfig) -> bool:
    named = {c.api_key_env for c in config.candidates.values() if c.api_key_env}
    named |= {e for e in (config.kafka.sasl_username_env, config.kafka.sasl_password_env) if e}
    return (name in _config_env_names() or name.startswith("ROUTER_STREAM__") or name in named
            or bool(GENERIC_ENV.match(name)))


def _plain_env(env: list[dict[str, Any]] | dict[str, Any] | None) -> dict[str, str]:
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items() if v is not None}
    return {e["name"]: str(e["value"]) for e in env or [] if "value" in e}


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"port {port!r} is not a named port of container {container['name']}")


def _statefulset_config() -> tuple[dict[str, Any], dict[str, Any], RouterConfig]:
    sts = _one("StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    cm = _one("ConfigMap")
    config = parse_config(yaml.safe_load(cm["data"]["routing.yaml"]), environ=_plain_env(container.get("env")))
    return sts, container, config


# ---------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("path", _yaml_files(K8S) + _yaml_files(DOCKER), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs)


def test_k8s_has_the_required_objects():
    objs = _k8s_objects()
    kinds = {o["kind"] for o in objs}
    assert {"StatefulSet", "ConfigMap", "Secret", "Service", "HorizontalPodAutoscaler", "Job"} <= kinds, kinds
    for o in objs:
        assert o.get("apiVersion") and o.get("metadata", {}).get("name"), o


def test_kustomization_lists_files_that_exist_but_not_the_secret_template():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    assert "secret.yaml" not in kust["resources"], "applying the placeholder Secret would overwrite real keys"


# ---------------------------------------------------------------------------------- k8s
def test_configmap_holds_a_valid_config_and_topics_spec(tmp_path):
    from router_stream.topics import load_spec

    _, _, config = _statefulset_config()
    assert config.worker.metrics_host == "0.0.0.0", "probes and Prometheus come from outside the pod"
    spec_path = tmp_path / "topics.yaml"
    spec_path.write_text(_one("ConfigMap")["data"]["topics.yaml"])
    specs = {s.role: s for s in load_spec(spec_path, config)}
    assert specs["requests"].partitions == specs["changelog"].partitions
    assert specs["changelog"].config.get("cleanup.policy") == "compact"
    assert specs["requests"].name == config.topics.requests


def test_statefulset_probes_ports_grace_and_state_volume():
    sts, container, config = _statefulset_config()
    pod = sts["spec"]["template"]["spec"]
    metrics_port = config.worker.metrics_port

    assert sts["spec"]["serviceName"] == _one("Service")["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > config.worker.shutdown_grace_s
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["path"] in _pages(), f"{get['path']} is not served by router_stream/app.py ({_pages()})"
        assert _container_port(container, get["port"]) == metrics_port
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] in _pages()
    annotations = sts["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/port") == str(metrics_port)
    assert annotations.get("prometheus.io/path", "/metrics") in _pages()

    # the RocksDB state dir lies on the volume claim template (one persistent volume per pod)
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert any(_under(config.cache.state_dir, mounts[c]) for c in claims if c in mounts), \
        (config.cache.state_dir, mounts, claims)

    # the config file comes from the ConfigMap and the CLI accepts the args
    args = build_parser().parse_args(container["args"])
    assert args.command == "run"
    _check_config_mount(pod, container, args.config)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"].get("runAsUser") or 0) != 0


def _check_config_mount(pod: dict[str, Any], container: dict[str, Any], path: str) -> None:
    cm = _one("ConfigMap")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        vol = volumes.get(m["name"], {})
        if "configMap" in vol and _under(path, m["mountPath"]):
            assert vol["configMap"]["name"] == cm["metadata"]["name"]
            key = path[len(m["mountPath"].rstrip("/")) + 1:]
            assert key in cm["data"], f"{path}: the ConfigMap has no key {key!r}"
            return
    raise AssertionError(f"{path} is not on a ConfigMap volume of {container['name']}")


def test_statefulset_env_names_are_known_and_api_keys_come_from_the_secret():
    _, container, config = _statefulset_config()
    secret = _one("Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    env = {e["name"]: e for e in container["env"]}
    for name in env:
        assert _env_allowed(name, config), f"env {name} is read by nothing in router_stream/config.py or config_sources.py"
    for cname, cand in config.candidates.items():
        if not cand.api_key_env:
            continue
        assert cand.api_key_env in env, f"candidates.{cname}.api_key_env {cand.api_key_env} is not set in the pod"
        ref = env[cand.api_key_env].get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{cand.api_key_env} must come from a Secret, not a literal value"
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys


def test_secret_holds_placeholders_only():
    secret = _one("Secret")
    values = dict(secret.get("stringData", {}))
    for k, v in (secret.get("data") or {}).items():
        values[k] = base64.b64decode(v).decode()
    assert values
    for key, value in values.items():
        assert PLACEHOLDER.match(str(value)), f"Secret key {key} holds something that is not a placeholder"


def test_service_exposes_the_metrics_port_with_prometheus_annotations():
    svc = _one("Service")
    sts, container, config = _statefulset_config()
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    port = next(p for p in svc["spec"]["ports"] if p["name"] == "metrics")
    assert _container_port(container, port.get("targetPort", port["port"])) == config.worker.metrics_port
    ann = svc["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(config.worker.metrics_port)
    assert ann.get("prometheus.io/path", "/metrics") in _pages()


def test_hpa_scales_the_statefulset_on_consumer_lag():
    hpa = _one("HorizontalPodAutoscaler")
    sts = _one("StatefulSet")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("StatefulSet", sts["metadata"]["name"])
    external = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert [e["metric"]["name"] for e in external] == ["router_stream_consumer_lag"]
    assert "router_stream_consumer_lag" in _metric_series()
    spec = yaml.safe_load(_one("ConfigMap")["data"]["topics.yaml"])
    assert hpa["spec"]["maxReplicas"] <= spec["defaults"]["partitions"], "workers beyond partitions sit idle"
    assert "adapter" in (K8S / "hpa.yaml").read_text(), "say that an external-metrics adapter is needed"


def test_topics_job_runs_topics_apply():
    job = _one("Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.action) == ("topics", "apply")
    _check_config_mount(pod, container, args.config)
    if args.spec:
        _check_config_mount(pod, container, args.spec)
    _, _, config = _statefulset_config()
    for name in _plain_env(container.get("env")):
        assert _env_allowed(name, config), name


# ---------------------------------------------------------------------------------- docker
def _dockerfile() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def test_dockerfile_entrypoint_and_non_root_user():
    instrs = _dockerfile()
    froms = [rest for instr, rest in instrs if instr == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    assert any(instr == "RUN" and re.search(r"pip install \.(\s|$)", rest) for instr, rest in instrs)
    final = instrs[max(i for i, (instr, _) in enumerate(instrs) if instr == "FROM"):]
    entry = [rest for instr, rest in final if instr == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["router-stream"], "exec form, so SIGTERM reaches the worker"
    users = [rest for instr, rest in final if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    cmd = [rest for instr, rest in final if instr == "CMD"]
    if cmd:
        build_parser().parse_args(json.loads(cmd[-1]))


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def test_compose_stack():
    from router_stream.devtools import model_server

    services = _compose()["services"]
    config = parse_config(yaml.safe_load((DOCKER / "routing.yaml").read_text()), environ={})

    brokers = [s for s in services.values() if str(s.get("image", "")).startswith("apache/kafka")]
    assert len(brokers) == 1
    benv = brokers[0]["environment"]
    assert "controller" in benv["KAFKA_PROCESS_ROLES"], "a KRaft broker (no ZooKeeper)"
    assert len(base64.urlsafe_b64decode(benv["CLUSTER_ID"] + "==")) == 16

    router_svcs = {n: s for n, s in services.items() if "entrypoint" not in s and s.get("image", "").startswith("router-stream")}
    parsed = {n: build_parser().parse_args(_command(s)) for n, s in router_svcs.items()}
    workers = [n for n, a in parsed.items() if a.command == "run"]
    topics = [n for n, a in parsed.items() if a.command == "topics"]
    assert len(workers) == 2 and len(topics) == 1, parsed
    for n in workers:
        svc = services[n]
        assert svc["depends_on"][topics[0]]["condition"] == "service_completed_successfully"
        grace = svc["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > config.worker.shutdown_grace_s
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(parsed[n].config) == "./routing.yaml"
        assert any(_under(config.cache.state_dir, m) and not src.startswith(".") for m, src in mounts.items())
        for name in _plain_env(svc["environment"]):
            assert _env_allowed(name, config), f"{n}: env {name} is read by nothing in the config"
        assert config.worker.metrics_host == "0.0.0.0"
        assert any(p.endswith(f":{config.worker.metrics_port}") for p in svc.get("ports", []))

    # model servers: reachable from the workers at the URLs the config gives
    servers = {}
    for n, s in services.items():
        if s.get("entrypoint") == ["python", "-m", "router_stream.devtools.model_server"]:
            servers[n] = model_server._build_parser().parse_args(_command(s))
    assert len(servers) == 2
    for cname, cand in config.candidates.items():
        m = re.match(r"^https?://([^:/]+):(\d+)/", cand.base_url)
        assert m and m.group(1) in servers, f"candidate {cname}: {cand.base_url} is no compose model server"
        args = servers[m.group(1)]
        assert args.port == int(m.group(2)) and args.host == "0.0.0.0"


def test_dockerfile_exposes_the_compose_metrics_port():
    config = parse_config(yaml.safe_load((DOCKER / "routing.yaml").read_text()), environ={})
    exposed = [rest for instr, rest in _dockerfile() if instr == "EXPOSE"]
    assert str(config.worker.metrics_port) in " ".join(exposed).split()


# ---------------------------------------------------------------------------------- grafana
PROMQL_WORDS = {
    # aggregations and keywords
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "atan2", "start", "end", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana ``$variables`` allowed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)                                      # Grafana variables
    s = re.sub(r"\{[^{}]*\}", " ", s)                                             # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)                                           # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s, flags=re.I)
    s = re.sub(r"(?<![\w.])\d+(\.\d+)?([eE][+-]?\d+)?(ms|s|m|h|d|w|y)?\b", " ", s)  # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation with its argument list
        if m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def _template_query_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (label_values, query_result, ...)."""
    m = re.match(r"^\s*label_values\(\s*(.*?)\s*,\s*[\w]+\s*\)\s*$", query)
    if m:
        return promql_metric_names(m.group(1))
    if re.match(r"^\s*label_values\(\s*\w+\s*\)\s*$", query) or re.match(r"^\s*(label_names|metrics)\(", query):
        return set()
    m = re.match(r"^\s*query_result\((.*)\)\s*$", query)
    return promql_metric_names(m.group(1) if m else query)


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows' nested panels too) and every query variable."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]
            yield from walk(p.get("panels", []))
    yield from walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            for name in _template_query_names(q):
                yield f"variable {var.get('name')!r}", name


def _metric_series() -> dict[str, str]:
    """Every series name the metrics in router_stream/metrics.py expose → their family name."""
    from router_stream.metrics import REGISTRY

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "stateset": ("",),
                "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
    out = {}
    for family in REGISTRY.collect():
        for suffix in suffixes[family.type]:
            out[family.name + suffix] = family.name
    return out


def unknown_metrics(dashboard: dict[str, Any]) -> list[str]:
    series = _metric_series()
    problems = []
    for where, expr in dashboard_exprs(dashboard):
        for name in sorted(promql_metric_names(expr) if not where.startswith("variable") else {expr}):
            if name not in series:
                problems.append(f"{where}: {name!r} is not a metric of router_stream/metrics.py")
    return problems


def test_promql_name_parser():
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le, candidate) (rate(router_stream_model_latency_seconds_bucket'
        '{candidate=~"$candidate", job!="x"}[$__rate_interval])))') == {"router_stream_model_latency_seconds_bucket"}
    assert promql_metric_names(
        'sum(rate(a_total{outcome!="ok"}[5m])) / clamp_min(sum(rate(b_total[5m] offset 1h)), 1e-9) * 3600'
    ) == {"a_total", "b_total"}
    assert promql_metric_names("max by (partition) (lag) > on(instance) group_left up") == {"lag", "up"}
    assert _template_query_names("label_values(router_stream_requests_total, candidate)") == {
        "router_stream_requests_total"}


def test_every_dashboard_metric_exists_in_metrics_py():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) >= 20
    assert unknown_metrics(dashboard) == []


def test_a_panel_with_an_unknown_metric_fails_the_check():
    dashboard = json.loads(DASHBOARD.read_text())
    bad = copy.deepcopy(dashboard)
    bad["panels"].append({"type": "timeseries", "title": "typo", "targets": [
        {"refId": "A", "expr": "sum(rate(router_stream_request_total[5m]))"}]})
    bad["panels"][0].setdefault("panels", []).append({"title": "nested", "targets": [
        {"refId": "B", "expr": "router_stream_requests"}]})  # a counter without its _total suffix
    problems = unknown_metrics(bad)
    assert any("router_stream_request_total" in p for p in problems)
    assert any("'router_stream_requests'" in p for p in problems)


def test_every_metric_in_metrics_py_is_on_the_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    series = _metric_series()
    used = {series[n] for where, e in dashboard_exprs(dashboard)
            for n in (promql_metric_names(e) if not where.startswith("variable") else {e}) if n in series}
    missing = sorted(set(series.values()) - used)
    assert not missing, f"metrics without a panel in {DASHBOARD.relative_to(ROOT)}: {missing}"


def test_dashboard_covers_the_operational_questions():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in dashboard_exprs(dashboard))
    for needle in ("histogram_quantile", 'result="hit"', "router_stream_transactions_total",
                   "router_stream_consumer_lag", "router_stream_cost_usd_total", "decided_by"):
        assert needle in exprs, needle
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
