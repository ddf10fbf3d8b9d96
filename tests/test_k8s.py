"""The sidecar's Kubernetes manifests and compose file: valid against the Kubernetes schemas (offline,
kubernetes-validate ships them), and wired the way docs/deploy.md says."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from guard.policy import load_spec
from guard.server.config import ServeConfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "adapters" / "sidecar" / "kubernetes"
K8S_VERSION = "1.30.0"


def documents() -> list[tuple[str, dict]]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


@pytest.mark.parametrize("name, doc", documents(), ids=lambda x: x if isinstance(x, str) else x.get("kind", "?"))
def test_every_manifest_validates_against_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path


def by_kind(kind: str, name: str | None = None) -> dict:
    return next(d for _, d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def test_the_deployment_runs_the_app_with_the_guard_as_a_sidecar_on_localhost():
    pod = by_kind("Deployment", "chat-app")["spec"]["template"]
    app, guard = (next(c for c in pod["spec"]["containers"] if c["name"] == n) for n in ("app", "guard"))
    assert {e["name"]: e.get("value") for e in app["env"]}["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"
    env = {e["name"]: e for e in guard["env"]}
    assert env["GUARD_HOST"]["value"] == "127.0.0.1" and "secretKeyRef" in env["GUARD_UPSTREAM_API_KEY"]["valueFrom"]
    for var in env:  # every GUARD_* variable names a real setting
        assert var.removeprefix("GUARD_").lower() in ServeConfig.model_fields, var
    assert guard["livenessProbe"]["httpGet"]["path"] == "/healthz" and guard["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert guard["resources"]["requests"] and guard["resources"]["limits"]
    assert guard["securityContext"]["readOnlyRootFilesystem"] and guard["securityContext"]["runAsUser"] != 0
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    mounts = {m["name"]: m["mountPath"] for m in guard["volumeMounts"]}
    assert guard["args"] == ["--policy", mounts["policies"]] and mounts["tmp"] == "/tmp"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]


def test_the_policy_in_the_configmap_is_a_valid_spec(tmp_path):
    for fname, text in by_kind("ConfigMap")["data"].items():
        (tmp_path / fname).write_text(text)
    spec = load_spec([tmp_path])
    assert spec.get("off-topic") is not None


def test_network_policy_keeps_application_pods_off_the_provider_except_through_the_guard():
    gateway = by_kind("NetworkPolicy", "apps-only-through-the-guard")["spec"]
    targets = [t for rule in gateway["egress"] for t in rule["to"]]
    assert not any("ipBlock" in t for t in targets)  # no way out but the guard (and DNS)
    assert {"app.kubernetes.io/component": "guard"} in [t.get("podSelector", {}).get("matchLabels") for t in targets]
    sidecar = by_kind("NetworkPolicy", "model-provider-egress")["spec"]
    assert sidecar["policyTypes"] == ["Egress"]
    assert [p["port"] for r in sidecar["egress"] if any("ipBlock" in t for t in r["to"]) for p in r["ports"]] == [443]


def test_compose_file_wires_app_guard_and_redis():
    compose = yaml.safe_load((ROOT / "adapters" / "sidecar" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"app", "guard", "redis"} <= set(services)
    guard = services["guard"]
    assert guard["environment"]["GUARD_CACHE_URL"].startswith("redis://redis:6379")
    assert guard["read_only"] is True and "/tmp" in guard["tmpfs"]
    assert "guard" in services["app"]["depends_on"]
    for var in guard["environment"]:
        assert var.removeprefix("GUARD_").lower() in ServeConfig.model_fields, var
