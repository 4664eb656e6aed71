"""Secure by default on KubeRay, checked offline over every manifest in the repo (found, not listed).

- Every Ray cluster spec (RayCluster.spec, RayJob.spec.rayClusterSpec, RayService.spec.rayClusterConfig)
  turns on Ray token auth with the one documented Secret, on a Ray version that has it (>= 2.52), and
  no pod switches it off again through its environment.
- Nothing exposes the head's GCS, dashboard or client ports: no LoadBalancer/NodePort Service or head
  service type, no Ingress, no KubeRay head ingress.
- The NetworkPolicy exists, is valid against Kubernetes' schema for it (vendored, strict) and lets in
  only Ray pods, the operator, the RayJob submitters and the serve port's clients.
- Every place that tells a user to run `ray job submit --address` also says how to pass the token.
The checks must be able to fail: each has a broken twin below.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from manifests import MANIFESTS, REPO_ROOT, kubernetes_objects, load_documents, manifest_id, yaml_files

TOKEN_SECRET = "ultrachat-ray-token"
CREATE_TOKEN_SECRET = (f'kubectl create secret generic {TOKEN_SECRET} '
                       f'--from-literal=auth_token="$(openssl rand -hex 32)"')
HEAD_PORTS = {6379, 8265, 10001}
EXPOSING_SERVICE_TYPES = {"LoadBalancer", "NodePort"}
RAY_NODES = {"ray.io/is-ray-node": "yes"}
NETWORK_POLICY_SCHEMA = json.loads(
    (REPO_ROOT / "tests" / "support" / "schemas" / "networkpolicy-networking-v1.json").read_text())


def ray_cluster_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, spec) of every Ray cluster a KubeRay object defines."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "RayCluster":
        return [("spec", spec)]
    if kind == "RayJob" and "rayClusterSpec" in spec:
        return [("spec.rayClusterSpec", spec["rayClusterSpec"])]
    if kind == "RayService":
        return [("spec.rayClusterConfig", spec["rayClusterConfig"])]
    return []


def _pods(cluster: dict) -> list[dict]:
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    return [g.get("template", {}).get("spec", {}) for g in groups]


def cluster_problems(where: str, cluster: dict) -> list[str]:
    problems = []
    auth = cluster.get("authOptions") or {}
    if auth.get("mode") != "token":
        problems.append(f"{where}.authOptions.mode is {auth.get('mode')!r}: KubeRay only turns Ray token auth on "
                        f"for `mode: token` (fix: authOptions: {{mode: token, secretName: {TOKEN_SECRET}}})")
    if auth.get("secretName") != TOKEN_SECRET:
        problems.append(f"{where}.authOptions.secretName is {auth.get('secretName')!r}, not the documented "
                        f"{TOKEN_SECRET} (one token for every cluster, created as the docs say)")
    version = tuple(int(x) for x in re.findall(r"\d+", str(cluster.get("rayVersion", "0")))[:2])
    if version < (2, 52):
        problems.append(f"{where}.rayVersion {cluster.get('rayVersion')!r}: Ray token auth needs >= 2.52")
    head = cluster.get("headGroupSpec") or {}
    if head.get("serviceType") in EXPOSING_SERVICE_TYPES:
        problems.append(f"{where}.headGroupSpec.serviceType {head['serviceType']} exposes the GCS, dashboard and "
                        f"client ports beyond the cluster: use ClusterIP and kubectl port-forward")
    if head.get("enableIngress"):
        problems.append(f"{where}.headGroupSpec.enableIngress: an Ingress to the dashboard/Jobs API")
    for pod in _pods(cluster):
        for container in pod.get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == "RAY_AUTH_MODE" and env.get("value") != "token":
                    problems.append(f"{where}: container {container.get('name')} sets RAY_AUTH_MODE="
                                    f"{env.get('value')!r}, switching token auth off")
    return problems


def exposure_problems(doc: dict) -> list[str]:
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
    spec = doc.get("spec") or {}
    if kind == "Service" and spec.get("type") in EXPOSING_SERVICE_TYPES:
        return [f"Service/{name} is of type {spec['type']}: nothing of Ray's is exposed beyond the cluster"]
    if kind == "Ingress":
        return [f"Ingress/{name}: no ingress to Ray's head (use kubectl port-forward plus the token)"]
    if kind == "RayService":
        service = (spec.get("serveService") or {}).get("spec") or {}
        ports = {p.get("port") for p in service.get("ports") or []}
        if service.get("type") in EXPOSING_SERVICE_TYPES and ports & HEAD_PORTS:
            return [f"RayService/{name}.spec.serveService exposes head ports {sorted(ports & HEAD_PORTS)}"]
    return []


def network_policy_problems(policy: dict) -> list[str]:
    name = (policy.get("metadata") or {}).get("name")
    problems = [f"NetworkPolicy/{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in jsonschema.Draft202012Validator(NETWORK_POLICY_SCHEMA).iter_errors(policy)]
    if problems:
        return problems
    spec = policy["spec"]
    if spec["podSelector"] != {"matchLabels": RAY_NODES}:
        problems.append(f"NetworkPolicy/{name}: podSelector must select every Ray pod ({RAY_NODES})")
    if "Ingress" not in spec.get("policyTypes", []):
        problems.append(f"NetworkPolicy/{name}: policyTypes lacks Ingress, so nothing is restricted")
    for i, rule in enumerate(spec.get("ingress") or []):
        where = f"NetworkPolicy/{name}.spec.ingress[{i}]"
        peers = rule.get("from")
        if not peers:
            problems.append(f"{where}: no `from`: every source may connect")
            continue
        ray_only = all(p == {"podSelector": {"matchLabels": RAY_NODES}} for p in peers)
        for peer in peers:
            if "ipBlock" in peer:
                problems.append(f"{where}: ipBlock {peer['ipBlock'].get('cidr')}: admit pods by label, not addresses")
            if peer.get("namespaceSelector") == {} and "podSelector" not in peer:
                problems.append(f"{where}: every pod of every namespace may connect")
        ports = {p.get("port") for p in rule.get("ports") or []}
        if not ray_only and not ports:
            problems.append(f"{where}: non-Ray peers on every port (list the ports they need)")
        if not ray_only and 8404 in ports:
            problems.append(f"{where}: HAProxy's stats page (8404) is opened")
        if not ray_only and ports & {6379, 10001}:
            problems.append(f"{where}: the GCS/client ports {sorted(ports & {6379, 10001})} for non-Ray peers")
    return problems


# --- the repo ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=manifest_id)
def test_every_ray_cluster_has_token_auth_and_no_exposed_head(path):
    docs = [d for d in load_documents(path) if isinstance(d, dict)]
    clusters = [c for d in docs for c in ray_cluster_specs(d)]
    assert clusters, f"{manifest_id(path)}: no Ray cluster spec found"
    problems = [p for where, c in clusters for p in cluster_problems(f"{manifest_id(path)}: {where}", c)]
    problems += [p for d in docs for p in exposure_problems(d)]
    assert not problems, "\n".join(problems)
    text = path.read_text()
    assert CREATE_TOKEN_SECRET in text, (f"{manifest_id(path)} uses Secret {TOKEN_SECRET} but its comments do not "
                                         f"say how to create it: {CREATE_TOKEN_SECRET}")


def test_no_object_in_the_repo_exposes_ray():
    problems = [p for doc in kubernetes_objects() for p in exposure_problems(doc)]
    assert not problems, "\n".join(problems)


def test_the_network_policy_exists_and_is_valid():
    policies = [d for d in kubernetes_objects() if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 1, f"expected one NetworkPolicy in the repo, found {len(policies)}"
    assert not network_policy_problems(policies[0]), "\n".join(network_policy_problems(policies[0]))
    ports = {p["port"] for rule in policies[0]["spec"]["ingress"] for p in rule.get("ports", [])}
    assert ports == {8265, 8000, 8080}, ports  # operator/submitters, API clients, metrics scrapers


def test_the_docs_create_the_token_secret_and_pass_the_token():
    for doc in ("README.md", "docs/operations.md"):
        assert CREATE_TOKEN_SECRET in (REPO_ROOT / doc).read_text(), f"{doc} does not create {TOKEN_SECRET}"
    assert "does not encrypt" in (REPO_ROOT / "docs/operations.md").read_text()


# A line that is a `ray job submit` command (in a shell block, a docstring or a YAML comment), not prose.
SUBMIT_COMMAND = re.compile(r"^\s*(#\s*)?(or:\s*)?ray job submit\b", re.MULTILINE)


def _submit_instructions() -> list[Path]:
    files = [*yaml_files(), *REPO_ROOT.glob("jobs/*.py"), *REPO_ROOT.glob("*.md"), *REPO_ROOT.glob("docs/*.md")]
    return sorted(p for p in set(files) if SUBMIT_COMMAND.search(p.read_text(errors="replace")))


@pytest.mark.parametrize("path", _submit_instructions(), ids=manifest_id)
def test_every_job_submit_instruction_says_how_to_pass_the_token(path):
    text = path.read_text()
    assert "RAY_AUTH_TOKEN" in text and "RAY_AUTH_MODE=token" in text, (
        f"{manifest_id(path)} tells users to `ray job submit ...` but not how to pass the Ray token: "
        f"add `export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=...` (see README, 'On a cluster (KubeRay)')")


# --- the checks can fail ----------------------------------------------------------------------


def _repo_cluster() -> dict:
    return next(d for d in load_documents(REPO_ROOT / "cluster.yaml") if d.get("kind") == "RayCluster")


def _repo_policy() -> dict:
    return next(d for d in load_documents(REPO_ROOT / "cluster.yaml") if d.get("kind") == "NetworkPolicy")


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.pop("authOptions"), "authOptions.mode is None"),
    (lambda c: c["authOptions"].update(mode="disabled"), "mode is 'disabled'"),
    (lambda c: c["authOptions"].update(secretName="other"), "not the documented"),
    (lambda c: c.update(rayVersion="2.51.0"), "needs >= 2.52"),
    (lambda c: c["headGroupSpec"].update(serviceType="LoadBalancer"), "serviceType LoadBalancer"),
    (lambda c: c["headGroupSpec"].update(enableIngress=True), "enableIngress"),
    (lambda c: c["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RAY_AUTH_MODE", "value": "disabled"}), "switching token auth off"),
])
def test_cluster_checks_catch(mutate, expected):
    cluster = copy.deepcopy(_repo_cluster()["spec"])
    assert not cluster_problems("spec", cluster)
    mutate(cluster)
    assert any(expected in p for p in cluster_problems("spec", cluster)), cluster_problems("spec", cluster)


def test_exposure_checks_catch():
    service = {"kind": "Service", "metadata": {"name": "head"}, "spec": {"type": "NodePort"}}
    ingress = {"kind": "Ingress", "metadata": {"name": "dash"}, "spec": {}}
    assert exposure_problems(service) and exposure_problems(ingress)
    assert not exposure_problems({"kind": "Service", "metadata": {"name": "x"}, "spec": {"type": "ClusterIP"}})


@pytest.mark.parametrize("mutate, expected", [
    (lambda p: p["spec"].update(podSelectr={}), "Additional properties"),
    (lambda p: p["spec"]["ingress"][1]["ports"][0].update(protocol="HTTP"), "is not one of"),
    (lambda p: p["spec"]["ingress"].append({}), "no `from`"),
    (lambda p: p["spec"]["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}), "ipBlock 0.0.0.0/0"),
    (lambda p: p["spec"]["ingress"].append({"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000}]}),
     "every pod of every namespace"),
    (lambda p: p["spec"]["ingress"][3]["ports"].append({"port": 8404}), "stats page"),
    (lambda p: p["spec"]["ingress"][1]["ports"].append({"port": 6379}), "GCS/client ports"),
    (lambda p: p["spec"].update(podSelector={}), "must select every Ray pod"),
    (lambda p: p["spec"].update(policyTypes=["Egress"]), "lacks Ingress"),
])
def test_network_policy_checks_catch(mutate, expected):
    policy = copy.deepcopy(_repo_policy())
    assert not network_policy_problems(policy)
    mutate(policy)
    assert any(expected in p for p in network_policy_problems(policy)), network_policy_problems(policy)


def test_the_vendored_schema_is_strict_where_yaml_typos_hide():
    policy = yaml.safe_load("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: typo}
spec:
  podSelector: {matchLabel: {a: b}}
""")
    assert any("matchLabel" in p for p in network_policy_problems(policy))
