"""The Helm chart, rendered by Helm itself and validated, with no cluster.

Rendering and linting go through `helm-python-sdk` (Helm's own Go SDK, v4, in a
shared library: the engine `helm template` runs, offline). Every rendered object is
validated against the Kubernetes API's OpenAPI schemas (`kubernetes-validate`,
strict: no unknown field); the ServiceMonitor, a Prometheus Operator resource,
against that operator's models (`cloudcoil-models-prometheus-operator`, generated
from its CRDs). Then what the objects mean is checked: sipfleet accepts the config,
selectors meet their pods, the grace period covers the graceful stop, and the
chart's probe and preStop commands run against a real sipfleet.
"""

from __future__ import annotations

import subprocess
import threading
import tomllib
from pathlib import Path
from typing import Any

import fleet
import helm_python as helm
import kubernetes_validate
import pytest
import sipp as harness
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

from sipfleet.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sipfleet"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.timeout(120)]

VALUES = {
    "default": {},
    "cluster": yaml.safe_load((CHART / "ci" / "cluster-values.yaml").read_text()),
    "daemonset": yaml.safe_load((CHART / "ci" / "daemonset-values.yaml").read_text()),
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="sf", namespace="voice")
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (w,) = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    return w


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = workload(objects)["spec"]["template"]["spec"]["containers"]
    return c


def _no_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value


@pytest.mark.parametrize("case", list(VALUES))
def test_every_object_validates(case):
    objects = render(VALUES[case])
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            model = ServiceMonitor.model_validate(obj)
            # The models ignore unknown fields: a field they dropped was not known.
            assert _no_none(model.model_dump(by_alias=True, mode="json")) == obj
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("case", list(VALUES))
def test_helm_lint_finds_nothing(case):
    report = helm.lint(CHART, VALUES[case], strict=True)
    assert report["errors"] == []
    worse_than_info = [m for m in report["messages"] if m["severity"] > 1]
    assert worse_than_info == [], report


def test_default_and_cluster_objects():
    default = by_kind(render({}))
    assert sorted(default) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    cluster = by_kind(render(VALUES["cluster"]))
    assert sorted(cluster) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "ServiceMonitor",
    ]  # fmt: skip
    assert cluster["Deployment"][0]["spec"]["replicas"] == 3
    daemon = by_kind(render(VALUES["daemonset"]))
    assert (
        "Service" not in daemon
        and daemon["DaemonSet"][0]["spec"]["template"]["spec"]["hostNetwork"]
    )


@pytest.mark.parametrize("case", list(VALUES))
def test_sipfleet_accepts_the_config(case, tmp_path):
    objects = render(VALUES[case])
    (cm,) = by_kind(objects)["ConfigMap"]
    path = tmp_path / "sipfleet.toml"
    path.write_text(cm["data"]["sipfleet.toml"])
    env = {e["name"]: e.get("value", "") for e in container(objects)["env"]}
    # Kubernetes expands $(SIP_ADVERTISE) from the pod's IP.
    listen = env["SIPFLEET_LISTEN"].replace("$(SIP_ADVERTISE)", "10.1.2.3")
    cfg = load_config(
        path, env={"SIPFLEET_LISTEN": listen, "SIPFLEET_HTTP_TOKEN": "t-0123456789abcdef"}
    )
    assert {(x.proto, x.host, x.port, x.advertise) for x in cfg.proxy.listen} == {
        ("udp", "0.0.0.0", 5060, "10.1.2.3"),
        ("tcp", "0.0.0.0", 5060, "10.1.2.3"),
    }
    assert str(cfg.control.run_dir) == "/run/sipfleet"
    mounts = {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert {"/etc/sipfleet", "/var/lib/sipfleet", "/run/sipfleet", "/tmp"} <= mounts
    if case == "cluster":
        assert cfg.proxy.shutdown_timeout == 900 and cfg.dispatcher.algorithm == 10
        assert cfg.control.http.host == "0.0.0.0"  # scraped: a token is set
        assert "dispatcher.list" not in cm["data"]
    else:
        assert cfg.store.type == "list" and cfg.store.path.startswith("/var/lib/sipfleet/")
        assert cfg.control.http.host == "127.0.0.1"
        init = workload(objects)["spec"]["template"]["spec"]["initContainers"][0]
        assert init["command"] == ["cp", "/etc/sipfleet/dispatcher.list", cfg.store.path]


def test_secrets_reach_the_pod_from_the_secret():
    objects = render(VALUES["cluster"])
    (secret,) = by_kind(objects)["Secret"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(objects)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(refs) == {"SIPFLEET_HTTP_TOKEN", "SIPFLEET_STORE_URL", "SIPFLEET_CLUSTER_REDIS"}
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"]["store-url"].startswith("postgresql://")
    assert secret["stringData"]["redis-url"].startswith("redis://")
    (cm,) = by_kind(objects)["ConfigMap"]
    assert "secret" not in cm["data"]["sipfleet.toml"]  # no URL or token in the ConfigMap
    (sm,) = by_kind(objects)["ServiceMonitor"]
    cred = sm["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert (cred["name"], cred["key"]) == (secret["metadata"]["name"], "rpc-token")


def test_an_existing_secret_replaces_the_charts():
    objects = render({**VALUES["cluster"], "existingSecret": "voice-secrets"})
    assert "Secret" not in by_kind(objects)
    names = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container(objects)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert names == {"voice-secrets"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"control": {"exposed": True}}, "requires control.token"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs control.exposed"),
        ({"cluster": {"enabled": True}}, "needs cluster.storeUrl"),
        ({"kind": "StatefulSet"}, "kind must be Deployment or DaemonSet"),
    ],
)
def test_values_sipfleet_would_refuse_fail_the_render(values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize("case", list(VALUES))
def test_selectors_meet_the_pods_and_ports(case):
    objects = render(VALUES[case])
    kinds = by_kind(objects)
    pod = workload(objects)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert workload(objects)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in container(objects)["ports"]}
    for svc in kinds.get("Service", []):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    for sm in kinds.get("ServiceMonitor", []):
        matched = [
            s
            for s in kinds["Service"]
            if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
        assert sm["spec"]["endpoints"][0]["port"] in {
            p["name"] for p in matched[0]["spec"]["ports"]
        }


@pytest.mark.parametrize("case", list(VALUES))
def test_the_grace_period_covers_the_graceful_stop(case):
    objects = render(VALUES[case])
    (cm,) = by_kind(objects)["ConfigMap"]
    shutdown = tomllib.loads(cm["data"]["sipfleet.toml"])["proxy"]["shutdown_timeout"]
    assert shutdown == (900 if case == "cluster" else 600)
    spec = workload(objects)["spec"]["template"]["spec"]
    c = container(objects)
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["/bin/sh", "-c"] and 'kill -TERM "$pid"' in pre_stop[2]
    assert spec["terminationGracePeriodSeconds"] >= shutdown + 5 + 10
    assert c["readinessProbe"]["exec"]["command"][:2] == ["sipfleet", "health"]
    assert "--live" not in c["readinessProbe"]["exec"]["command"]
    assert "--live" in c["livenessProbe"]["exec"]["command"]
    # Stopping takes the pod out at the first failed readiness probe.
    assert c["readinessProbe"]["failureThreshold"] == 1
    security = c["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert spec["securityContext"].get("runAsNonRoot", False) is True  # port 5060: no root


@pytest.mark.e2e
def test_the_charts_probes_and_prestop_drain_a_running_sipfleet(sipp_env):
    """The readiness, liveness and preStop commands as rendered (the control port and
    the PID are this test's): ready while serving; after preStop's SIGTERM with a call
    up, not ready but alive; preStop returns once sipfleet exited, after the call."""
    objects = render({"preStopDelaySeconds": 0})
    c = container(objects)
    uas = fleet.uas(sipp_env)
    proxy = fleet.proxy(sipp_env, [fleet.Dest(uas)])
    assert proxy.popen is not None

    def probes() -> tuple[int | None, int | None]:
        """(readiness, liveness) exit codes, run at once (the call's hold time is short)."""
        procs = []
        for kind in ("readinessProbe", "livenessProbe"):
            argv = [
                a.replace("127.0.0.1:9060", f"127.0.0.1:{proxy.http_port}")
                for a in c[kind]["exec"]["command"]
            ]
            argv[0] = harness.sipfleet_command()[0]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        ready, live = (p.wait(timeout=30) for p in procs)
        return ready, live

    assert probes() == (0, 0)
    call = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=1, rate=10, duration_ms=6000)
    fleet.wait_for("the call up", lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 1, 10)

    script = c["lifecycle"]["preStop"]["exec"]["command"][2]
    assert script.startswith("pid=1;")
    script = script.replace("pid=1;", f"pid={proxy.popen.pid};", 1)
    # In the pod, PID 1's exit ends the container; here its parent (us) reaps it.
    reaper = threading.Thread(target=proxy.popen.wait, daemon=True)
    reaper.start()
    pre_stop = subprocess.Popen(["/bin/sh", "-c", script])
    fleet.wait_for("the graceful stop", lambda: not proxy.rpc("sipfleet.status")["accepting"], 5)
    assert pre_stop.poll() is None  # still waiting: the call is up
    assert probes() == (1, 0)  # out of the Service, not restarted
    assert pre_stop.wait(timeout=30) == 0
    reaper.join(5)
    assert proxy.popen.returncode == 0
    result = call.wait()
    assert (result.successful, result.failed) == (1, 0), result.summary()
