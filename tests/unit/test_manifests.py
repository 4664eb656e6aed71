"""Every KubeRay manifest in the repo must pass strict validation against the KubeRay CRDs.

The CRDs are not vendored: CI checks them out beside the repo (``../shared/kuberay-crds``), or
``$ULTRACHAT_KUBERAY_CRDS`` points at them.
"""

from pathlib import Path

import pytest
import yaml

from manifests import MANIFESTS, REPO_ROOT, crd_dir, manifest_id  # noqa: F401  (crd_dir: a fixture)
import kuberay_schema as kuberay


def test_cluster_yaml_is_discovered():
    assert REPO_ROOT / "cluster.yaml" in MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=manifest_id)
def test_manifest_is_valid(path, crd_dir):
    errors = kuberay.validate_file(path, crd_dir)
    assert not errors, "\n".join(errors)


def test_cluster_yaml_contract():
    """What the jobs rely on, beyond schema validity."""
    cluster, pvc, _policy = yaml.safe_load_all((REPO_ROOT / "cluster.yaml").read_text())  # policy: test_manifest_security
    spec = cluster["spec"]
    assert spec["rayVersion"] == "2.60.0"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert all(g["minReplicas"] == 0 for g in groups.values())
    gpu_container = groups["gpu"]["template"]["spec"]["containers"][0]
    assert int(gpu_container["resources"]["limits"]["nvidia.com/gpu"]) >= 1

    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for group in [spec["headGroupSpec"], *groups.values()]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        shared = volumes[mounts["/mnt/shared"]]
        assert shared["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"


# --- the validator must be able to fail -------------------------------------------------------


def _worker(name: str, **resources) -> dict:
    return {
        "groupName": name,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": 2,
        "rayStartParams": {},
        "template": {"spec": {"containers": [{
            "name": "ray-worker",
            "image": "ultrachat-platform:0.1.0-gpu",
            "resources": {"limits": resources},
        }]}},
    }


def minimal_cluster() -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "test"},
        "spec": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0"},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:2.60.0"}]}},
            },
            # Quantities as int and as string: both are valid int-or-string values.
            "workerGroupSpecs": [
                _worker("cpu", cpu="500m", memory="2Gi"),
                _worker("gpu", cpu=8, **{"nvidia.com/gpu": 8}),
            ],
        },
    }


def test_minimal_cluster_is_valid(crd_dir):
    assert kuberay.validate_manifest(minimal_cluster(), crd_dir) == []


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


def _container(m: dict, group: int) -> dict:
    return m["spec"]["workerGroupSpecs"][group]["template"]["spec"]["containers"][0]


NEGATIVE_CASES = {
    "typo_in_worker_group": (
        lambda m: _rename(m["spec"]["workerGroupSpecs"][1], "rayStartParams", "rayStartParam"),
        [
            "spec.workerGroupSpecs[1].rayStartParam",
            "unknown field 'rayStartParam'",
            "did you mean 'rayStartParams'",
        ],
    ),
    "typo_deep_in_pod_template": (
        lambda m: _rename(_container(m, 0), "image", "imgae"),
        ["spec.workerGroupSpecs[0].template.spec.containers[0].imgae", "did you mean 'image'"],
    ),
    "wrong_type": (
        lambda m: m["spec"]["workerGroupSpecs"][0].update(replicas="two"),
        ["spec.workerGroupSpecs[0].replicas", "'two' is not of type 'integer'"],
    ),
    "ray_start_param_not_a_string": (
        lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        ["spec.headGroupSpec.rayStartParams.num-cpus", "not of type 'string'"],
    ),
    "bad_quantity": (
        lambda m: _container(m, 0)["resources"]["limits"].update(memory="lots"),
        ["resources.limits.memory", "not a quantity"],
    ),
    "missing_required_field": (
        lambda m: m["spec"]["workerGroupSpecs"][1].pop("template"),
        ["spec.workerGroupSpecs[1]", "'template' is a required property"],
    ),
    "missing_name": (
        lambda m: m["metadata"].pop("name"),
        ["metadata.name", "required"],
    ),
    "unknown_ray_kind": (
        lambda m: m.update(kind="RayClustre"),
        ["RayClustre", "did you mean 'RayCluster'"],
    ),
}


@pytest.mark.parametrize("mutate, expected", NEGATIVE_CASES.values(), ids=NEGATIVE_CASES.keys())
def test_invalid_manifest_is_reported(mutate, expected, crd_dir):
    manifest = minimal_cluster()
    mutate(manifest)
    errors = kuberay.validate_manifest(manifest, crd_dir)
    assert len(errors) == 1, errors
    for fragment in expected:
        assert fragment in errors[0]


def test_validate_file_skips_core_kinds_and_prefixes_errors(tmp_path, crd_dir):
    bad = minimal_cluster()
    bad["kind"] = "RayJobb"
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "x"}}
    pvc["spec"] = {"bogus": 1}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump_all([pvc, minimal_cluster(), bad]))
    errors = kuberay.validate_file(path, crd_dir)
    assert len(errors) == 1, errors  # the PVC's bogus field is not our business
    assert errors[0].startswith(f"{path}:2 RayJobb/test: ")


# --- OpenAPI-isms, on a synthetic CRD so they are covered whatever KubeRay's CRDs use ----------

SYNTHETIC_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.ray.io}
spec:
  group: ray.io
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v9
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              properties:
                port: {x-kubernetes-int-or-string: true}
                when: {type: string, format: date-time, nullable: true}
                count: {type: integer, format: int32}
                free:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
                  properties: {a: {type: string}}
                labels: {type: object, additionalProperties: {type: string}}
    - name: v8
      served: false
      storage: false
      schema: {openAPIV3Schema: {type: object}}
"""


def test_openapi_extensions_do_not_cause_false_errors(tmp_path):
    (tmp_path / "widgets.yaml").write_text(SYNTHETIC_CRD)
    widget = {
        "apiVersion": "ray.io/v9",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {
            "port": "http",
            "when": None,
            "count": 3,
            "free": {"anything": [1]},
            "labels": {"k": "v"},
        },
    }
    assert kuberay.validate_manifest(widget, tmp_path) == []
    widget["spec"]["port"] = 8080
    assert kuberay.validate_manifest(widget, tmp_path) == []

    widget["spec"].update(port=1.5, cuont=1)
    errors = kuberay.validate_manifest(widget, tmp_path)
    assert any("spec.port" in e and "integer or a string" in e for e in errors), errors
    assert any("spec.cuont" in e and "did you mean 'count'" in e for e in errors), errors

    widget["apiVersion"] = "ray.io/v8"  # not served
    assert "no CRD" in kuberay.validate_manifest(widget, tmp_path)[0]


def test_default_crd_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(kuberay.CRD_DIR_ENV, raising=False)
    assert kuberay.default_crd_dir(tmp_path / "repo") == tmp_path / "shared" / "kuberay-crds"
    monkeypatch.setenv(kuberay.CRD_DIR_ENV, "/somewhere/crds")
    assert kuberay.default_crd_dir(tmp_path / "repo") == Path("/somewhere/crds")
