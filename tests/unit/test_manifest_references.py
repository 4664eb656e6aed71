"""What the KubeRay manifests point at, checked offline: the part no CRD schema can see.

For every ray.io manifest in the repo (found, not listed: see manifests.py):
- RayJob: the entrypoint's script exists (jobs/*.py), its --config file exists and validates WITH the
  entrypoint's key=value overrides through ultrachat's own loader, runtimeEnvYAML parses and is a
  valid Ray runtime_env whose working_dir is the repo copy in the image, the config's local paths
  lie on a volume every pod mounts, and its actors / Ray Train workers fit the cluster's pods;
- every pod of a cluster runs the one image the Dockerfile builds, at the Dockerfile's Ray version;
- every PVC a pod mounts is defined in the repo; every Secret is defined in the repo or created by
  a `kubectl create secret` command in the file's own comments (with the keys it references);
  no credential is written inline;
- RayService: each Serve application's import_path imports from what the image installs.
(tests/unit/test_serving_config.py validates serveConfigV2 as a Serve config and builds its args.)

Errors read "<file>:<document> <Kind>/<name>: <field>: <problem and fix>".
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from manifest_checker import IMAGE, ManifestChecker
from manifests import MANIFESTS, REPO_ROOT, load_documents, manifest_id


def test_dockerfile_matches_the_project():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as in the image and CI
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    name, _, tag = IMAGE.tag.rpartition(":")
    assert name == project["name"] and tag.startswith(project["version"]), (
        f"Dockerfile documents the image {IMAGE.tag}; expected {project['name']}:{project['version']}-... "
        f"(the package and version it installs)")
    (ray_pin,) = [d for d in project["dependencies"] if d.startswith("ray[")]
    pinned = ray_pin.partition("==")[2].rstrip(".*")
    assert IMAGE.ray_version.startswith(pinned), f"base image Ray {IMAGE.ray_version} but pyproject pins {ray_pin}"
    assert IMAGE.workdir == "/home/ray/ultrachat", IMAGE
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().split()
    for heavy in (".venv", ".git", "outputs", "**/__pycache__"):
        assert heavy in dockerignore, f".dockerignore must exclude {heavy} (it would land in the image and in uploads)"


# ------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def checker() -> ManifestChecker:
    return ManifestChecker()


@pytest.mark.parametrize("path", MANIFESTS, ids=manifest_id)
def test_manifest_references_resolve(path, checker):
    errors = checker.check_file(path)
    assert not errors, "\n".join(errors)


def test_the_rayjobs_for_generate_and_train_exist():
    jobs = {}
    for path in MANIFESTS:
        for doc in load_documents(path):
            if isinstance(doc, dict) and doc.get("kind") == "RayJob":
                jobs[shlex.split(doc["spec"]["entrypoint"])[1]] = path
    assert {"jobs/generate.py", "jobs/train.py"} <= set(jobs), jobs
    for path in jobs.values():  # the header opens with the command that runs the file
        assert path.read_text().splitlines()[0].strip("# ") == f"kubectl apply -f {manifest_id(path)}", path


# --- the checks must be able to fail ------------------------------------------------------------

GENERATE = REPO_ROOT / "jobs" / "rayjob-generate.yaml"


def _write(tmp_path: Path, doc: dict, header: str = "") -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path


def _generate_job() -> tuple[dict, str]:
    text = GENERATE.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return yaml.safe_load(text), header


def _pods(doc: dict) -> list[dict]:
    cluster = doc["spec"]["rayClusterSpec"]
    return [g["template"]["spec"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def _set_entrypoint_word(old: str, new: str):
    def mutate(doc):
        assert old in doc["spec"]["entrypoint"]
        doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace(old, new)
    return mutate


def _worker_gpus(n: int):
    def mutate(doc):
        resources = _pods(doc)[1]["containers"][0]["resources"]
        resources["requests"]["nvidia.com/gpu"] = resources["limits"]["nvidia.com/gpu"] = n
    return mutate


NEGATIVE_CASES = {
    "missing_entrypoint_file": (
        _set_entrypoint_word("jobs/generate.py", "jobs/genrate.py"),
        ["spec.entrypoint: jobs/genrate.py does not exist in the repo", "did you mean 'jobs/generate.py'"],
    ),
    "bad_override": (
        _set_entrypoint_word("openings.path=", "actors.max_actor=2 openings.path="),
        ["spec.entrypoint: --config configs/generate/vllm-gpu.yaml", "override 'actors.max_actor=2'",
         "did you mean 'max_actors'"],
    ),
    "override_with_a_bad_value": (
        _set_entrypoint_word("openings.path=", "actors.min_actors=0 openings.path="),
        ["spec.entrypoint: ", "override 'actors.min_actors=0'", "greater than or equal to 1"],
    ),
    "missing_config_file": (
        _set_entrypoint_word("configs/generate/vllm-gpu.yaml", "configs/generate/vllm-gpus.yaml"),
        ["spec.entrypoint: --config configs/generate/vllm-gpus.yaml does not exist", "vllm-gpu.yaml"],
    ),
    "not_a_job_script": (
        _set_entrypoint_word("jobs/generate.py", "jobs/_bootstrap.py"),
        ["spec.entrypoint: jobs/_bootstrap.py is not a job entrypoint"],
    ),
    "no_working_dir": (
        lambda doc: doc["spec"].update(runtimeEnvYAML="env_vars: {A: b}\n"),
        ["spec.runtimeEnvYAML.working_dir: not set: set it to /home/ray/ultrachat"],
    ),
    "runtime_env_typo": (
        lambda doc: doc["spec"].update(runtimeEnvYAML="working_dir: /home/ray/ultrachat\nenv_var: {A: b}\n"),
        ["spec.runtimeEnvYAML.env_var: not a Ray runtime_env field; did you mean 'env_vars'"],
    ),
    "runtime_env_rejected_by_ray": (
        lambda doc: doc["spec"].update(runtimeEnvYAML="working_dir: /home/ray/ultrachat\nenv_vars: {A: 1}\n"),
        ["spec.runtimeEnvYAML: Ray rejects this runtime_env", "Dict[str, str]"],
    ),
    "inline_api_key_in_runtime_env": (
        lambda doc: doc["spec"].update(
            runtimeEnvYAML="working_dir: /home/ray/ultrachat\nenv_vars: {OPENAI_API_KEY: sk-abc}\n"),
        ["spec.runtimeEnvYAML.env_vars.OPENAI_API_KEY: a credential written inline"],
    ),
    "inline_token_in_pod_env": (
        lambda doc: _pods(doc)[1]["containers"][0]["env"].append({"name": "HF_TOKEN", "value": "hf_abc"}),
        ["spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].env[2].value: HF_TOKEN holds a "
         "credential written inline"],
    ),
    "image_not_from_the_dockerfile": (
        lambda doc: _pods(doc)[1]["containers"][0].update(image="rayproject/ray:2.60.0-gpu"),
        ["spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].image: 'rayproject/ray:2.60.0-gpu' "
         "is not the image the Dockerfile builds (ultrachat-platform:0.1.0-gpu",
         "spec.rayClusterSpec: the pods run different images"],
    ),
    "submitter_on_another_image": (
        lambda doc: doc["spec"].update(submitterPodTemplate={"spec": {"restartPolicy": "Never", "containers": [
            {"name": "submitter", "image": "rayproject/ray:2.60.0"}]}}),
        ["spec.submitterPodTemplate.spec.containers[0].image: 'rayproject/ray:2.60.0': the submitter uploads"],
    ),
    "ray_version_mismatch": (
        lambda doc: doc["spec"]["rayClusterSpec"].update(rayVersion="2.59.0"),
        ["spec.rayClusterSpec.rayVersion: '2.59.0', but the Dockerfile's base image is Ray 2.60.0"],
    ),
    "unknown_pvc": (
        lambda doc: _pods(doc)[0]["volumes"][0]["persistentVolumeClaim"].update(claimName="ultrachat-shard"),
        ["spec.rayClusterSpec.headGroupSpec.template.spec.volumes[0].persistentVolumeClaim.claimName: PVC "
         "'ultrachat-shard' is not defined", "ultrachat-shared"],
    ),
    "undocumented_secret": (
        lambda doc: _pods(doc)[0]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"].update(name="hf-tokn"),
        ["spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].env[1].valueFrom.secretKeyRef.name: "
         "Secret 'hf-tokn' is neither defined in the repo nor created in this file's comments"],
    ),
    "secret_key_not_created": (
        lambda doc: _pods(doc)[0]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"].update(key="hf_token"),
        ["secretKeyRef.key: key 'hf_token' is not in Secret 'hf-token' (it has ['token'])"],
    ),
    "output_dir_on_no_volume": (
        _set_entrypoint_word("output_dir=/mnt/shared/ultrachat/generate-vllm", "output_dir=/data/generate"),
        ["spec.entrypoint: the config's output_dir=/data/generate is on no volume mounted by the head, gpu pods"],
    ),
    "actors_larger_than_any_pod": (
        _worker_gpus(2),
        ["spec.entrypoint: actors (min_actors) each need 8 CPU + 4 GPU, more than any pod of the cluster has "
         "(head: 0 CPU 0 GPU, gpu: 64 CPU 2 GPU)"],
    ),
    "cluster_selector_to_an_unknown_cluster": (
        lambda doc: doc["spec"].update(rayClusterSpec=None, clusterSelector={"ray.io/cluster": "ultrachatt"}),
        ["spec.clusterSelector: selects RayCluster 'ultrachatt', which no manifest in the repo defines "
         "(defined: ['ultrachat'])"],
    ),
}


@pytest.mark.parametrize("mutate, expected", NEGATIVE_CASES.values(), ids=NEGATIVE_CASES.keys())
def test_broken_references_are_reported(mutate, expected, tmp_path, checker):
    doc, header = _generate_job()
    mutate(doc)
    if doc["spec"].get("rayClusterSpec") is None:
        doc["spec"].pop("rayClusterSpec", None)
    path = _write(tmp_path, doc, header)
    errors = checker.check_file(path)
    assert errors, "the broken manifest passed"
    text = "\n".join(errors)
    assert all(e.startswith(f"{path}:0 RayJob/ultrachat-generate: ") for e in errors), text
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def test_the_unmodified_generate_job_passes_the_same_way(tmp_path, checker):
    doc, header = _generate_job()
    assert checker.check_file(_write(tmp_path, doc, header)) == []


def test_a_job_on_the_long_lived_cluster_is_checked_against_it(tmp_path, checker):
    doc, header = _generate_job()
    doc["spec"].pop("rayClusterSpec")
    doc["spec"]["clusterSelector"] = {"ray.io/cluster": "ultrachat"}
    # cluster.yaml's GPU group (8 GPUs, 64 CPUs, up to 4 pods) holds the 4-GPU actors; its pods mount /mnt/shared.
    assert checker.check_file(_write(tmp_path, doc, header)) == []
    doc["spec"]["entrypoint"] += " actors.min_actors=9 actors.max_actors=9"
    (error,) = checker.check_file(_write(tmp_path, doc, header))
    assert "actors (min_actors): 9 needed at once, but the cluster's pods hold at most 8" in error


def test_both_or_neither_cluster_source_is_an_error(tmp_path, checker):
    doc, header = _generate_job()
    doc["spec"]["clusterSelector"] = {"ray.io/cluster": "ultrachat"}
    (error,) = checker.check_file(_write(tmp_path, doc, header))
    assert error.endswith("spec: set exactly one of rayClusterSpec (its own cluster) and clusterSelector "
                          "(an existing RayCluster)")


def test_train_job_needs_all_its_workers_at_once(tmp_path, checker):
    text = (REPO_ROOT / "jobs" / "rayjob-train.yaml").read_text()
    doc = yaml.safe_load(text)
    doc["spec"]["entrypoint"] += " cpus_per_worker=16"  # 8 x 16 CPUs: more than the one 112-CPU pod holds
    errors = checker.check_file(_write(tmp_path, doc, text))
    assert len(errors) == 1 and "Ray Train workers (num_workers): 8 needed at once, but the cluster's pods " \
                                "hold at most 7" in errors[0], errors


def test_serve_import_paths_must_resolve(tmp_path, checker):
    text = (REPO_ROOT / "serve" / "rayservice.yaml").read_text()
    doc = yaml.safe_load(text)
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    serve["applications"][0]["import_path"] = "ultrachat.serving.app:build_ap"
    serve["applications"].append({**serve["applications"][0], "name": "b", "route_prefix": "/b",
                                  "import_path": "serve.app:build_app"})
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    errors = checker.check_file(_write(tmp_path, doc, text))
    assert len(errors) == 2, errors
    assert "spec.serveConfigV2.applications[0].import_path: 'ultrachat.serving.app:build_ap' does not resolve" \
           in errors[0]
    assert "applications[1].import_path: 'serve.app:build_app': 'serve' is not a package the image installs" \
           in errors[1]
