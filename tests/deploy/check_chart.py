#!/usr/bin/env python3
"""Check the deployment files: the Helm chart and the Cloud Run service.

    .venv/bin/python tests/deploy/check_chart.py [--kube-version 1.30.0]

1. Lints helm/sts-bridge with Helm itself (the Go SDK, embedded by helm-python-sdk; no
   helm binary and no cluster), once with the chart's defaults and once with every
   optional part switched on.
2. Renders both value sets and validates every manifest against the Kubernetes API
   schemas of --kube-version (kubernetes-validate, strict: unknown fields are errors).
   CRD objects (ServiceMonitor, PodMonitoring) have no bundled schema and are checked
   field by field here. Then checks what the service relies on: probes, non-root and
   read-only settings, the config file and its mount, the /data emptyDir, the
   DATABASE_URL secret reference, the config checksum, and so on.
3. Renders value sets the chart must refuse, and expects the refusal (several replicas or
   an autoscaler without a shared database among them); renders each way of sharing one.
4. Parses deploy/cloudrun/service.yaml, validates its pod part against the same schemas
   and checks the Cloud Run fields it relies on.

Needs tests/deploy/requirements.txt. Offline. Prints every failure and a closing
"deploy: N passed, N failed" line; exits 1 on any failure, 2 when a package is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sts-bridge"
CLOUDRUN = ROOT / "deploy" / "cloudrun" / "service.yaml"
RELEASE = "sts-bridge"
NAMESPACE = "identity"
CONFIG_PATH = "/etc/sts-bridge/config.toml"
SERVE_ARGS = ["serve", "--config", CONFIG_PATH]
UID = 65532

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - depends on the environment
    print(f"check_chart: missing Python package {exc.name!r}; "
          f"install tests/deploy/requirements.txt", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- results


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.scope = ""

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        label = f"[{self.scope}] {what}" if self.scope else what
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{label}: {detail}" if detail else label)
            print(f"FAIL {label}" + (f": {detail}" if detail else ""))
        return ok

    def equal(self, what: str, got: Any, want: Any) -> bool:
        return self.check(what, got == want, f"got {got!r}, want {want!r}")


R = Results()


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    """obj[path[0]][path[1]]…, or default when any step is missing."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return default
    return obj


def env_map(container: dict) -> dict[str, dict]:
    return {e.get("name"): e for e in container.get("env") or []}


# --------------------------------------------------------------------------- values

# Every optional part of the chart switched on.
EVERYTHING: dict[str, Any] = {
    "image": {"repository": "europe-docker.pkg.dev/example/images/sts-bridge", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccount": {
        "annotations": {
            "iam.gke.io/gcp-service-account": "sts-bridge@example.iam.gserviceaccount.com",
        },
    },
    "database": {"existingSecret": "sts-bridge-db", "secretKey": "url"},
    "assertionKeys": {"existingSecret": "sts-bridge-keys"},
    "redis": {"existingSecret": "sts-bridge-redis", "urlKey": "url", "keyKey": "key"},
    "cloudSqlProxy": {
        "enabled": True,
        "instanceConnectionName": "example:europe-west1:records",
        "autoIamAuthn": True,
        "extraArgs": ["--max-connections=20"],
    },
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                    "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2, "maxUnavailable": ""},
    "metrics": {
        "port": 9464,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitoring": {"enabled": True},
    },
    "service": {"annotations": {"networking.gke.io/load-balancer-type": "Internal"},
                "type": "LoadBalancer"},
    "preStopSleepSeconds": 5,
    "terminationGracePeriodSeconds": 45,
    "extraEnv": [{"name": "STS_BRIDGE__CACHE__MAX_ENTRIES", "value": "50000"}],
    "extraEnvFrom": [{"configMapRef": {"name": "sts-bridge-extra"}}],
    "podAnnotations": {"example.com/team": "identity"},
    "podLabels": {"example.com/tier": "auth"},
    "priorityClassName": "high",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "identity",
                     "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
}

# Value sets the chart must refuse, with a fragment of the expected message.
REFUSED: list[tuple[str, dict, str]] = [
    ("config given as a map", {"config": {"issuers": []}}, "TOML document given as a string"),
    ("empty config", {"config": ""}, "config"),
    ("grace period shorter than pre-stop sleep + 30 s",
     {"preStopSleepSeconds": 20, "terminationGracePeriodSeconds": 40},
     "terminationGracePeriodSeconds"),
    ("Cloud SQL proxy without an instance", {"cloudSqlProxy": {"enabled": True}},
     "instanceConnectionName"),
    ("PodDisruptionBudget with both bounds",
     {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
     "exactly one"),
    ("several replicas without a shared database", {"replicaCount": 2},
     "replicaCount 2 needs a shared database"),
    ("an autoscaler without a shared database", {"autoscaling": {"enabled": True}},
     "autoscaling.enabled needs a shared database"),
    ("several replicas with Redis but without a shared database",
     {"replicaCount": 2, "redis": {"existingSecret": "redis"}},
     "replicaCount 2 needs a shared database"),
    ("several replicas when only the commented-out config names a database",
     {"replicaCount": 3,
      "config": '[log]\nfilter = "info"\n# database_url = "postgres://db/records"\n'},
     "needs a shared database"),
]

# Each way of giving every replica the same database lets several replicas render; the
# replica count (or autoscaler) must then reach the Deployment.
SHARED_DATABASE: list[tuple[str, dict, int | None]] = [
    ("database.existingSecret", {"replicaCount": 3, "database": {"existingSecret": "db"}}, 3),
    ("DATABASE_URL in extraEnv",
     {"replicaCount": 2, "extraEnv": [{"name": "DATABASE_URL",
                                       "valueFrom": {"secretKeyRef": {"name": "db", "key": "u"}}}]},
     2),
    ("audit.database_url in config",
     {"replicaCount": 2,
      "config": '[audit]\ndatabase_url = "postgres://u:p@db:5432/records"\n'},
     2),
    ("autoscaler with database.existingSecret",
     {"autoscaling": {"enabled": True}, "database": {"existingSecret": "db"}}, None),
]


# --------------------------------------------------------------------------- helm


def lint(values: dict, kube_version: str) -> None:
    try:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{kube_version}")
    except helm.HelmError as exc:
        R.check("helm lint runs", False, str(exc))
        return
    # Severity: 1 info, 2 warning, 3 error. Strict lint counts warnings as failures.
    findings = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in findings:
        R.check("helm lint", False, f"{m.get('path')}: {m.get('error')}")
    for err in report.get("errors", []) or []:
        R.check("helm lint", False, str(err))
    if not findings and not report.get("errors"):
        R.check("helm lint (strict)", True)


def render(values: dict) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def parse_manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        try:
            parsed = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            R.check(f"{template} is YAML", False, str(exc).replace("\n", " "))
            continue
        for doc in parsed:
            if doc is None:
                continue
            if not R.check(f"{template} holds objects", isinstance(doc, dict),
                           f"got {type(doc).__name__}"):
                continue
            docs.append((template, doc))
    return docs


# --------------------------------------------------------------------------- schemas


def check_service_monitor(doc: dict) -> None:
    R.equal("ServiceMonitor apiVersion", doc.get("apiVersion"), "monitoring.coreos.com/v1")
    endpoints = dig(doc, "spec", "endpoints", default=[])
    R.check("ServiceMonitor has one endpoint", isinstance(endpoints, list) and len(endpoints) == 1,
            repr(endpoints))
    R.equal("ServiceMonitor port (metrics.port)", dig(endpoints, 0, "port"), "metrics")
    R.equal("ServiceMonitor path", dig(endpoints, 0, "path"), "/metrics")
    R.check("ServiceMonitor selects the Service",
            bool(dig(doc, "spec", "selector", "matchLabels")), "no matchLabels")


def check_pod_monitoring(doc: dict) -> None:
    R.equal("PodMonitoring apiVersion", doc.get("apiVersion"), "monitoring.googleapis.com/v1")
    R.equal("PodMonitoring port (metrics.port)", dig(doc, "spec", "endpoints", 0, "port"),
            "metrics")
    R.equal("PodMonitoring path", dig(doc, "spec", "endpoints", 0, "path"), "/metrics")
    R.check("PodMonitoring selects the pods",
            bool(dig(doc, "spec", "selector", "matchLabels")), "no matchLabels")


CRD_CHECKS: dict[str, Callable[[dict], None]] = {
    "ServiceMonitor": check_service_monitor,
    "PodMonitoring": check_pod_monitoring,
}


def validate_schema(label: str, doc: dict, kube_version: str) -> None:
    kind = doc.get("kind", "?")
    name = dig(doc, "metadata", "name", default="?")
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
        R.check(f"{label}: {kind}/{name} matches the Kubernetes {kube_version} schema", True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        R.check(f"{label}: {kind}/{name} matches the Kubernetes {kube_version} schema",
                False, f"{path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError:
        if kind in CRD_CHECKS:
            CRD_CHECKS[kind](doc)
        else:
            R.check(f"{label}: {kind}/{name} has a known schema", False,
                    f"no schema for {doc.get('apiVersion')} {kind}")
    except kubernetes_validate.utils.VersionNotSupportedError:
        R.check(f"kubernetes-validate supports {kube_version}", False,
                f"supported: {', '.join(kubernetes_validate.utils.all_versions())}")
        raise SystemExit(finish())


# --------------------------------------------------------------------------- chart checks


def by_kind(docs: list[tuple[str, dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _, doc in docs:
        out.setdefault(doc.get("kind", "?"), []).append(doc)
    return out


def check_container_security(what: str, container: dict) -> None:
    sc = container.get("securityContext") or {}
    R.equal(f"{what}: runAsNonRoot", sc.get("runAsNonRoot"), True)
    R.equal(f"{what}: runAsUser", sc.get("runAsUser"), UID)
    R.equal(f"{what}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem"), True)
    R.equal(f"{what}: allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation"), False)
    R.equal(f"{what}: capabilities.drop", dig(sc, "capabilities", "drop"), ["ALL"])
    R.equal(f"{what}: seccompProfile", dig(sc, "seccompProfile", "type"), "RuntimeDefault")


def check_chart_objects(docs: list[tuple[str, dict]], values: dict, everything: bool) -> None:
    kinds = by_kind(docs)
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    if everything:
        expected |= {"HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitoring"}
    R.equal("rendered kinds", sorted(kinds), sorted(expected))
    for kind, objs in kinds.items():
        for obj in objs:
            R.equal(f"{kind} namespace", dig(obj, "metadata", "namespace"), NAMESPACE)

    deployments = kinds.get("Deployment", [])
    if not R.check("one Deployment", len(deployments) == 1, f"{len(deployments)} found"):
        return
    dep = deployments[0]
    pod = dig(dep, "spec", "template", "spec", default={})
    selector = dig(dep, "spec", "selector", "matchLabels", default={})
    pod_labels = dig(dep, "spec", "template", "metadata", "labels", default={})
    R.check("pod labels carry the selector",
            all(pod_labels.get(k) == v for k, v in selector.items()) and bool(selector),
            f"selector {selector}, labels {pod_labels}")

    if everything:
        R.check("no replicas under the autoscaler", "replicas" not in dep["spec"],
                f"replicas={dep['spec'].get('replicas')}")
    else:
        R.equal("one replica without a shared database", dep["spec"].get("replicas"), 1)
    R.equal("rollout keeps capacity", dig(dep, "spec", "strategy", "rollingUpdate",
                                          "maxUnavailable"), 0)

    annotations = dig(dep, "spec", "template", "metadata", "annotations", default={})
    R.check("config checksum annotation",
            bool(re.fullmatch(r"[0-9a-f]{64}", str(annotations.get("checksum/config", "")))),
            repr(annotations.get("checksum/config")))

    psc = pod.get("securityContext") or {}
    R.equal("pod runAsNonRoot", psc.get("runAsNonRoot"), True)
    R.equal("pod runAsUser", psc.get("runAsUser"), UID)
    R.equal("pod seccompProfile", dig(psc, "seccompProfile", "type"), "RuntimeDefault")
    R.equal("no Kubernetes API token", pod.get("automountServiceAccountToken"), False)

    grace = pod.get("terminationGracePeriodSeconds")
    sleep = values.get("preStopSleepSeconds", 5)
    R.check("grace period covers the 30 s shutdown",
            isinstance(grace, int) and grace >= 30 + sleep, f"grace={grace}, sleep={sleep}")

    containers = pod.get("containers") or []
    main = [c for c in containers if c.get("name") == "sts-bridge"]
    if not R.check("sts-bridge container", len(main) == 1, f"{[c.get('name') for c in containers]}"):
        return
    c = main[0]
    R.equal("container args", c.get("args"), SERVE_ARGS)
    if everything:
        R.equal("image", c.get("image"), "europe-docker.pkg.dev/example/images/sts-bridge:1.2.3")
    ports = {p.get("name"): p for p in c.get("ports") or []}
    R.equal("container port", dig(ports, "http", "containerPort"), 8080)
    check_container_security("sts-bridge", c)

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        R.equal(f"{probe} path", dig(c, probe, "httpGet", "path"), path)
        R.equal(f"{probe} port", dig(c, probe, "httpGet", "port"), "http")
    R.check("readiness timeout exceeds the 2 s store check",
            (dig(c, "readinessProbe", "timeoutSeconds") or 1) > 2,
            str(dig(c, "readinessProbe", "timeoutSeconds")))

    env = env_map(c)
    R.equal("STS_BRIDGE__LOG__FORMAT", dig(env, "STS_BRIDGE__LOG__FORMAT", "value"), "json")
    R.equal("STS_BRIDGE__AUDIT__SQLITE_PATH", dig(env, "STS_BRIDGE__AUDIT__SQLITE_PATH", "value"),
            "/data/sts-bridge.sqlite")
    R.equal("STS_BRIDGE__LISTEN", dig(env, "STS_BRIDGE__LISTEN", "value"), "0.0.0.0:8080")
    if everything:
        R.equal("DATABASE_URL secret", dig(env, "DATABASE_URL", "valueFrom", "secretKeyRef"),
                {"name": "sts-bridge-db", "key": "url"})
        R.equal("extra env", dig(env, "STS_BRIDGE__CACHE__MAX_ENTRIES", "value"), "50000")
        R.equal("preStop sleep", dig(c, "lifecycle", "preStop", "sleep", "seconds"), 5)
        R.equal("metrics container port", dig(ports, "metrics", "containerPort"), 9464)
        R.equal("STS_BRIDGE__METRICS__LISTEN", dig(env, "STS_BRIDGE__METRICS__LISTEN", "value"),
                "0.0.0.0:9464")
    else:
        R.check("no metrics listener by default", "STS_BRIDGE__METRICS__LISTEN" not in env,
                repr(env.get("STS_BRIDGE__METRICS__LISTEN")))
        R.check("no DATABASE_URL without a secret", "DATABASE_URL" not in env, repr(env.get("DATABASE_URL")))
        R.equal("preStop pause by default", dig(c, "lifecycle", "preStop", "sleep", "seconds"), 5)
        R.check("grace period covers the default pause and the shutdown",
                isinstance(grace, int) and grace >= 30 + 5, f"grace={grace}")

    mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    config_mount = mounts.get("/etc/sts-bridge", {})
    R.equal("config mounted read-only", config_mount.get("readOnly"), True)
    data_mount = mounts.get("/data", {})
    R.check("/data is an emptyDir",
            "emptyDir" in volumes.get(data_mount.get("name"), {}), f"mounts {sorted(mounts)}")
    config_volume = volumes.get(config_mount.get("name"), {})
    cm_name = dig(config_volume, "configMap", "name")
    keys_mount = mounts.get("/etc/sts-bridge-keys")
    if everything:
        R.equal("assertion keys mounted read-only", (keys_mount or {}).get("readOnly"), True)
        R.equal("assertion keys Secret, owner-read only",
                dig(volumes.get((keys_mount or {}).get("name"), {}), "secret"),
                {"secretName": "sts-bridge-keys", "defaultMode": 0o400})
    else:
        R.check("no assertion keys without a Secret", keys_mount is None, repr(keys_mount))

    redis_mount = mounts.get("/etc/sts-bridge-redis")
    if everything:
        R.equal("Redis URL from its Secret",
                dig(env, "STS_BRIDGE__CACHE__REDIS_URL", "valueFrom", "secretKeyRef"),
                {"name": "sts-bridge-redis", "key": "url"})
        R.equal("Redis key read from the mounted file",
                dig(env, "STS_BRIDGE__CACHE__REDIS_KEY_FILE", "value"),
                "/etc/sts-bridge-redis/redis-key")
        R.equal("Redis key mounted read-only", (redis_mount or {}).get("readOnly"), True)
        R.equal("Redis key Secret, only the key, owner-read only",
                dig(volumes.get((redis_mount or {}).get("name"), {}), "secret"),
                {"secretName": "sts-bridge-redis", "defaultMode": 0o400,
                 "items": [{"key": "key", "path": "redis-key"}]})
    else:
        R.check("no Redis without a Secret (the tier is off by default)",
                redis_mount is None and "STS_BRIDGE__CACHE__REDIS_URL" not in env,
                repr(redis_mount))

    configmaps = {dig(o, "metadata", "name"): o for o in kinds.get("ConfigMap", [])}
    cm = configmaps.get(cm_name)
    if R.check("config volume names the ConfigMap", cm is not None,
               f"volume {config_volume}, ConfigMaps {sorted(configmaps)}"):
        text = dig(cm, "data", "config.toml")
        if R.check("ConfigMap has config.toml", isinstance(text, str), repr(cm.get("data"))):
            try:
                config = tomllib.loads(text)
                R.check("config.toml names an issuer and a target",
                        bool(config.get("issuers")) and bool(config.get("targets")),
                        f"top-level keys {sorted(config)}")
            except tomllib.TOMLDecodeError as exc:
                R.check("config.toml is TOML", False, str(exc))

    sa_name = pod.get("serviceAccountName")
    sas = {dig(o, "metadata", "name"): o for o in kinds.get("ServiceAccount", [])}
    R.check("pod uses the chart's ServiceAccount", sa_name in sas, f"{sa_name} not in {sorted(sas)}")
    if everything and sa_name in sas:
        R.equal("Workload Identity annotation",
                dig(sas[sa_name], "metadata", "annotations", "iam.gke.io/gcp-service-account"),
                "sts-bridge@example.iam.gserviceaccount.com")

    services = kinds.get("Service", [])
    if R.check("one Service", len(services) == 1, f"{len(services)} found"):
        svc = services[0]
        R.equal("Service targets the http port", dig(svc, "spec", "ports", 0, "targetPort"), "http")
        R.equal("Service selects the pods", dig(svc, "spec", "selector"), selector)

    pdbs = kinds.get("PodDisruptionBudget", [])
    if pdbs:
        R.equal("PodDisruptionBudget selects the pods",
                dig(pdbs[0], "spec", "selector", "matchLabels"), selector)
        if everything:
            R.equal("PodDisruptionBudget minAvailable", dig(pdbs[0], "spec", "minAvailable"), 2)
        else:
            R.equal("PodDisruptionBudget maxUnavailable", dig(pdbs[0], "spec", "maxUnavailable"), 1)

    if everything:
        hpa = kinds.get("HorizontalPodAutoscaler", [{}])[0]
        R.equal("HPA target", dig(hpa, "spec", "scaleTargetRef", "name"), dig(dep, "metadata", "name"))
        R.equal("HPA bounds", (dig(hpa, "spec", "minReplicas"), dig(hpa, "spec", "maxReplicas")),
                (3, 12))
        sm = kinds.get("ServiceMonitor", [{}])[0]
        R.equal("ServiceMonitor selects the Service", dig(sm, "spec", "selector", "matchLabels"),
                selector)
        R.equal("ServiceMonitor extra labels", dig(sm, "metadata", "labels", "release"), "prometheus")

        inits = {i.get("name"): i for i in pod.get("initContainers") or []}
        proxy = inits.get("cloud-sql-proxy")
        if R.check("Cloud SQL proxy sidecar", proxy is not None, f"init containers {sorted(inits)}"):
            R.equal("proxy is a native sidecar", proxy.get("restartPolicy"), "Always")
            R.equal("proxy instance is the last argument", (proxy.get("args") or [None])[-1],
                    "example:europe-west1:records")
            R.check("proxy flags", {"--private-ip", "--auto-iam-authn", "--port=5432"}
                    <= set(proxy.get("args") or []), repr(proxy.get("args")))
            check_container_security("cloud-sql-proxy", proxy)

        spread = pod.get("topologySpreadConstraints") or [{}]
        R.equal("spread constraint gets the pod selector",
                dig(spread, 0, "labelSelector", "matchLabels"), selector)
    else:
        R.check("no init containers by default", not pod.get("initContainers"),
                repr(pod.get("initContainers")))


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what Helm's Go code prints straight to file descriptor 2 (value-merge warnings
    for the value sets that are meant to be refused)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_refused(name: str, values: dict, fragment: str) -> None:
    try:
        with native_stderr_silenced():
            render(values)
    except helm.HelmError as exc:
        R.check(f"refuses {name}", fragment.lower() in str(exc).lower(),
                f"refused, but the message lacks {fragment!r}: {exc}")
        return
    R.check(f"refuses {name}", False, "rendered without an error")


def check_chart(kube_version: str) -> None:
    R.check("chart directory", (CHART / "Chart.yaml").is_file(), str(CHART))
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    R.equal("Chart.yaml apiVersion", meta.get("apiVersion"), "v2")
    R.equal("chart name", meta.get("name"), "sts-bridge")

    for label, values in (("defaults", {}), ("everything", EVERYTHING)):
        R.scope = label
        lint(values, kube_version)
        try:
            rendered = render(values)
        except helm.HelmError as exc:
            R.check("render", False, str(exc))
            continue
        docs = parse_manifests(rendered)
        for template, doc in docs:
            validate_schema(template.split("/")[-1], doc, kube_version)
        check_chart_objects(docs, values, everything=label == "everything")

    R.scope = "refused"
    for name, values, fragment in REFUSED:
        check_refused(name, values, fragment)
    R.scope = "shared database"
    for name, values, replicas in SHARED_DATABASE:
        check_shared_database(name, values, replicas)
    R.scope = ""


def check_shared_database(name: str, values: dict, replicas: int | None) -> None:
    try:
        with native_stderr_silenced():
            docs = parse_manifests(render(values))
    except helm.HelmError as exc:
        R.check(f"renders with {name}", False, str(exc))
        return
    kinds = by_kind(docs)
    dep = (kinds.get("Deployment") or [{}])[0]
    R.equal(f"replicas with {name}", dig(dep, "spec", "replicas"), replicas)
    if replicas is None:
        R.equal(f"autoscaler with {name}", len(kinds.get("HorizontalPodAutoscaler", [])), 1)


# --------------------------------------------------------------------------- Cloud Run


def check_cloudrun(kube_version: str) -> None:
    R.scope = "cloudrun"
    try:
        docs = [d for d in yaml.safe_load_all(CLOUDRUN.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as exc:
        R.check("service.yaml is readable YAML", False, str(exc))
        R.scope = ""
        return
    if not R.check("one object", len(docs) == 1, f"{len(docs)} found"):
        R.scope = ""
        return
    svc = docs[0]
    R.equal("apiVersion", svc.get("apiVersion"), "serving.knative.dev/v1")
    R.equal("kind", svc.get("kind"), "Service")
    R.check("name", bool(dig(svc, "metadata", "name")), "missing")

    meta_ann = dig(svc, "metadata", "annotations", default={}) or {}
    tmpl_ann = dig(svc, "spec", "template", "metadata", "annotations", default={}) or {}
    for where, ann in (("service", meta_ann), ("revision", tmpl_ann)):
        bad = {k: v for k, v in ann.items() if not isinstance(v, str)}
        R.check(f"{where} annotation values are strings", not bad, repr(bad))
    R.check("ingress is internal",
            meta_ann.get("run.googleapis.com/ingress") in
            {"internal", "internal-and-cloud-load-balancing"},
            repr(meta_ann.get("run.googleapis.com/ingress")))
    R.equal("invoker IAM check off (token_url is called without Google credentials)",
            meta_ann.get("run.googleapis.com/invoker-iam-disabled"), "true")
    R.equal("gen2", tmpl_ann.get("run.googleapis.com/execution-environment"), "gen2")
    min_scale = str(tmpl_ann.get("autoscaling.knative.dev/minScale", ""))
    max_scale = str(tmpl_ann.get("autoscaling.knative.dev/maxScale", ""))
    R.check("minScale >= 1", min_scale.isdigit() and int(min_scale) >= 1, repr(min_scale))
    R.check("maxScale >= minScale",
            max_scale.isdigit() and min_scale.isdigit() and int(max_scale) >= int(min_scale),
            f"min {min_scale!r}, max {max_scale!r}")
    R.check("Cloud SQL instance is PROJECT:REGION:INSTANCE",
            bool(re.fullmatch(r"[^:,\s]+:[^:,\s]+:[^:,\s]+",
                              tmpl_ann.get("run.googleapis.com/cloudsql-instances", ""))),
            repr(tmpl_ann.get("run.googleapis.com/cloudsql-instances")))

    spec = dig(svc, "spec", "template", "spec", default={}) or {}
    R.check("service account", "@" in str(spec.get("serviceAccountName", "")),
            repr(spec.get("serviceAccountName")))
    R.check("request timeout covers Google's 10 s and the 5 s commit",
            isinstance(spec.get("timeoutSeconds"), int) and spec["timeoutSeconds"] >= 15,
            repr(spec.get("timeoutSeconds")))
    R.equal("traffic to the latest revision", dig(svc, "spec", "traffic", 0, "latestRevision"), True)

    containers = spec.get("containers") or []
    if not R.check("one container", len(containers) == 1, f"{len(containers)} found"):
        R.scope = ""
        return
    c = containers[0]
    R.equal("args", c.get("args"), SERVE_ARGS)
    R.equal("container port", dig(c, "ports", 0, "containerPort"), 8080)
    R.equal("port name (HTTP/1)", dig(c, "ports", 0, "name"), "http1")
    env = env_map(c)
    R.equal("STS_BRIDGE__LOG__FORMAT", dig(env, "STS_BRIDGE__LOG__FORMAT", "value"), "json")
    R.equal("STS_BRIDGE__LISTEN", dig(env, "STS_BRIDGE__LISTEN", "value"), "0.0.0.0:8080")
    ref = dig(env, "DATABASE_URL", "valueFrom", "secretKeyRef", default={}) or {}
    R.check("DATABASE_URL from Secret Manager", bool(ref.get("name")) and bool(ref.get("key")),
            repr(env.get("DATABASE_URL")))
    R.check("DATABASE_URL pinned to a secret version", str(ref.get("key", "")).isdigit(),
            repr(ref.get("key")))
    limits = dig(c, "resources", "limits", default={}) or {}
    R.check("cpu and memory limits", "cpu" in limits and "memory" in limits, repr(limits))

    for probe, path in (("startupProbe", "/readyz"), ("livenessProbe", "/healthz")):
        p = c.get(probe) or {}
        R.equal(f"{probe} path", dig(p, "httpGet", "path"), path)
        R.equal(f"{probe} port", dig(p, "httpGet", "port"), 8080)
        period, timeout = p.get("periodSeconds", 10), p.get("timeoutSeconds", 1)
        R.check(f"{probe} timeout <= period", timeout <= period, f"{timeout} > {period}")
    sp = c.get("startupProbe") or {}
    window = sp.get("initialDelaySeconds", 0) + sp.get("failureThreshold", 3) * sp.get("periodSeconds", 10)
    R.check("startup window within Cloud Run's 240 s", window <= 240, f"{window} s")

    mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    secret = dig(volumes, mounts.get("/etc/sts-bridge"), "secret", default={}) or {}
    R.check("config mounted from a secret", bool(secret.get("secretName")), repr(mounts))
    R.equal("secret file is config.toml", dig(secret, "items", 0, "path"), "config.toml")

    # The revision's pod part uses Kubernetes' PodSpec fields, plus Knative's own.
    pod_spec = {k: v for k, v in copy.deepcopy(spec).items()
                if k not in ("containerConcurrency", "timeoutSeconds")}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "cloudrun-revision"}, "spec": pod_spec}
    validate_schema("service.yaml", pod, kube_version)
    R.scope = ""


# --------------------------------------------------------------------------- main


def finish() -> int:
    print(f"deploy: {R.passed} passed, {len(R.failed)} failed")
    if R.failed:
        print("\nFailures:", file=sys.stderr)
        for f in R.failed:
            print(f"  - {f}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kube-version", default="1.30.0",
                        help="Kubernetes version whose API schemas are used (default 1.30.0)")
    args = parser.parse_args()
    print(f"Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__}, "
          f"Kubernetes {args.kube_version} schemas")
    check_chart(args.kube_version)
    check_cloudrun(args.kube_version)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
