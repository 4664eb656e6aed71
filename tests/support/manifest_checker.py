"""The KubeRay manifest checker: what the manifests point at, checked offline (the part no CRD schema
can see). Used by tests/unit/test_manifest_references.py, which says what is checked."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from manifests import REPO_ROOT, kubernetes_objects, load_documents
from ultrachat.config import load_config
from ultrachat.errors import ConfigError

# Env var / runtime_env names that hold credentials: they must come from a Secret, never a literal.
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|SECRET|PASSW(OR)?D|TOKEN|CREDENTIALS?)(_|$)", re.IGNORECASE)
# Jobs that take no --config (the rest are the config-driven jobs in JOB_SCHEMAS).
CONFIGLESS_JOBS = {"doctor"}


# ----------------------------------------------------------------------- what the image holds


@dataclass(frozen=True)
class Image:
    tag: str          # name:tag the Dockerfile's build command documents, e.g. ultrachat-platform:0.1.0-gpu
    ray_version: str  # from the base image's tag, e.g. 2.60.0
    python: str       # e.g. py311
    workdir: str      # where the repo is copied, e.g. /home/ray/ultrachat


def read_dockerfile(path: Path) -> Image:
    text = path.read_text()
    tags = set(re.findall(r"docker build\b[^\n]*?\s-t\s+(\S+)", text))
    assert len(tags) == 1, (f"{path}: expected one documented `docker build -t NAME:TAG` command in the comments, "
                            f"found {sorted(tags) or 'none'}; the manifests' images are checked against it")
    base = re.search(r"^(?:ARG RAY_IMAGE=|FROM )rayproject/ray:(\d+\.\d+\.\d+)-(py\d+)-\S+", text, re.MULTILINE)
    assert base, f"{path}: the base image must be an official rayproject/ray:<version>-py<XY>-<variant> tag"
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", text, re.MULTILINE)
    assert workdirs, f"{path}: no WORKDIR: where is the repo copied in the image?"
    return Image(tags.pop(), base.group(1), base.group(2), workdirs[-1])


IMAGE = read_dockerfile(REPO_ROOT / "Dockerfile")



# ------------------------------------------------------------------------------- the checker


class Problems(list):
    def add(self, field: str, message: str) -> None:
        self.append(f"{field}: {message}")


def _quantity(value: Any) -> float:
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


@dataclass
class Group:
    field: str         # e.g. spec.rayClusterSpec.workerGroupSpecs[0]
    name: str
    pod: dict          # template.spec
    cpus: float
    gpus: float
    max_pods: int


def _groups(cluster: dict, prefix: str) -> list[Group]:
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    raw = [(f"{prefix}.headGroupSpec", "head", cluster.get("headGroupSpec") or {}, 1)]
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        pods = group.get("maxReplicas" if autoscaling else "replicas", group.get("minReplicas", 0)) or 0
        raw.append((f"{prefix}.workerGroupSpecs[{i}]", group.get("groupName", f"#{i}"), group, pods))
    groups = []
    for field, name, group, pods in raw:
        pod = (group.get("template") or {}).get("spec") or {}
        container = (pod.get("containers") or [{}])[0]  # KubeRay's Ray container is the first one
        limits = (container.get("resources") or {}).get("limits") or {}
        params = group.get("rayStartParams") or {}
        cpus = _quantity(params.get("num-cpus", limits.get("cpu", 0)))
        gpus = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        groups.append(Group(field, name, pod, cpus, gpus, int(pods)))
    return groups


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _documented_secrets(text: str) -> dict[str, set[str] | None]:
    """Secrets a file's comments create with `kubectl create secret TYPE NAME --from-literal=KEY=...`."""
    found: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        match = re.search(r"kubectl create secret \S+ ([a-z0-9][-a-z0-9.]*)(.*)", line)
        if match:
            keys = set(re.findall(r"--from-(?:literal|file)=([^=\s]+)=", match.group(2)))
            found[match.group(1)] = keys or None  # None: keys not stated (e.g. --from-env-file)
    return found


class ManifestChecker:
    def __init__(self, repo_root: Path = REPO_ROOT, image: Image = IMAGE, objects: list[dict] | None = None):
        self.repo = repo_root
        self.image = image
        objects = kubernetes_objects(repo_root) if objects is None else objects
        self.defined = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def check_file(self, path: Path) -> list[str]:
        text = path.read_text()
        shown = path.relative_to(self.repo) if path.is_relative_to(self.repo) else path
        errors = []
        for index, doc in enumerate(load_documents(path)):
            if not (isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/")):
                continue
            problems = Problems()
            self.check_document(doc, text, problems)
            name = (doc.get("metadata") or {}).get("name", "<unnamed>")
            errors += [f"{shown}:{index} {doc.get('kind')}/{name}: {p}" for p in problems]
        return errors

    def check_document(self, doc: dict, text: str, problems: Problems) -> None:
        spec = doc.get("spec") or {}
        kind = doc.get("kind")
        cluster, prefix = {
            "RayCluster": (spec, "spec"),
            "RayJob": (spec.get("rayClusterSpec"), "spec.rayClusterSpec"),
            "RayService": (spec.get("rayClusterConfig"), "spec.rayClusterConfig"),
        }.get(kind, (None, ""))
        if cluster:
            self.check_cluster(cluster, prefix, problems)
        self.check_references(doc, text, problems)
        if kind == "RayJob":
            self.check_job(doc, problems)
        if kind == "RayService":
            self.check_serve_apps(spec, problems)

    # --- images and versions

    def check_cluster(self, cluster: dict, prefix: str, problems: Problems) -> None:
        if cluster.get("rayVersion") != self.image.ray_version:
            problems.add(f"{prefix}.rayVersion", f"{cluster.get('rayVersion')!r}, but the Dockerfile's base image is "
                                                 f"Ray {self.image.ray_version}; they must match")
        images = {}
        for group in _groups(cluster, prefix):
            for i, container in enumerate(group.pod.get("containers") or []):
                field = f"{group.field}.template.spec.containers[{i}].image"
                image = container.get("image", "")
                images[field] = image
                if image.rpartition("/")[2] != self.image.tag:
                    problems.add(field, f"{image!r} is not the image the Dockerfile builds ({self.image.tag}, "
                                        f"optionally behind a registry prefix)")
        if len(set(images.values())) > 1:
            listed = ", ".join(f"{f}={i}" for f, i in images.items())
            problems.add(f"{prefix}", f"the pods run different images ({listed}); Ray needs the same Ray and "
                                      f"Python on every node: use one")

    # --- PVCs, Secrets, inline credentials

    def check_references(self, doc: dict, text: str, problems: Problems) -> None:
        documented = _documented_secrets(text)
        for field, node in _walk(doc):
            if not isinstance(node, dict):
                continue
            claim = (node.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in self.defined:
                known = sorted(n for k, n in self.defined if k == "PersistentVolumeClaim")
                problems.add(f"{field}.persistentVolumeClaim.claimName",
                             f"PVC {claim!r} is not defined in any manifest of the repo (defined: {known})")
            refs = []
            if isinstance(node.get("secret"), dict):
                refs.append((f"{field}.secret.secretName", node["secret"].get("secretName"), None))
            if isinstance(node.get("secretKeyRef"), dict):
                ref = node["secretKeyRef"]
                refs.append((f"{field}.secretKeyRef.name", ref.get("name"), ref.get("key")))
            if isinstance(node.get("secretRef"), dict):
                refs.append((f"{field}.secretRef.name", node["secretRef"].get("name"), None))
            for ref_field, name, key in refs:
                self._check_secret(ref_field, name, key, documented, problems)
            if "value" in node and isinstance(node.get("name"), str) and SECRET_NAME.search(node["name"]):
                problems.add(f"{field}.value", f"{node['name']} holds a credential written inline; take it from a "
                                               f"Secret: valueFrom: {{secretKeyRef: {{name: ..., key: ...}}}}")

    def _check_secret(self, field: str, name: str | None, key: str | None, documented: dict,
                      problems: Problems) -> None:
        defined = self.defined.get(("Secret", name))
        if defined is not None:
            keys = {*(defined.get("data") or {}), *(defined.get("stringData") or {})}
        elif name in documented:
            keys = documented[name]
        else:
            problems.add(field, f"Secret {name!r} is neither defined in the repo nor created in this file's comments; "
                                f"add e.g. `#   kubectl create secret generic {name} --from-literal=KEY=...` to the "
                                f"header")
            return
        if key is not None and keys is not None and key not in keys:
            problems.add(field.replace(".name", ".key"),
                         f"key {key!r} is not in Secret {name!r} (it has {sorted(keys)})")

    # --- RayJob: entrypoint, config, runtime env, storage, resources

    def check_job(self, doc: dict, problems: Problems) -> None:
        spec = doc.get("spec") or {}
        selector = spec.get("clusterSelector")
        if bool(selector) == bool(spec.get("rayClusterSpec")):
            problems.add("spec", "set exactly one of rayClusterSpec (its own cluster) and clusterSelector "
                                 "(an existing RayCluster)")
            return
        cluster, prefix = spec.get("rayClusterSpec"), "spec.rayClusterSpec"
        if selector:
            cluster, prefix = self._selected_cluster(selector, problems)
        working_dir = self.check_runtime_env(spec, problems)
        # The submitter uploads working_dir from its own filesystem: it must run the same image.
        submitter = ((spec.get("submitterPodTemplate") or {}).get("spec") or {}).get("containers") or []
        for i, container in enumerate(submitter):
            if container.get("image", "").rpartition("/")[2] != self.image.tag:
                problems.add(f"spec.submitterPodTemplate.spec.containers[{i}].image",
                             f"{container.get('image')!r}: the submitter uploads the working_dir from its own "
                             f"image, so it must be {self.image.tag} (or leave the template out: KubeRay "
                             f"then uses the head's image)")
        config = self.check_entrypoint(spec.get("entrypoint"), working_dir, problems)
        if config is not None and cluster:
            groups = _groups(cluster, prefix)
            self.check_paths_are_mounted(config, groups, problems)
            self.check_resources_fit(config, groups, problems)

    def _selected_cluster(self, selector: dict, problems: Problems) -> tuple[dict | None, str]:
        name = selector.get("ray.io/cluster")
        found = self.defined.get(("RayCluster", name))
        if found is None:
            known = sorted(n for k, n in self.defined if k == "RayCluster")
            problems.add("spec.clusterSelector", f"selects RayCluster {name!r}, which no manifest in the repo "
                                                 f"defines (defined: {known}); use ray.io/cluster: <name>")
            return None, ""
        return found.get("spec") or {}, f"RayCluster/{name} spec"

    def check_runtime_env(self, spec: dict, problems: Problems) -> str | None:
        """The job's working dir in the image, or None (reported) when there is none."""
        from ray.runtime_env import RuntimeEnv

        field = "spec.runtimeEnvYAML"
        try:
            env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
        except yaml.YAMLError as err:
            problems.add(field, f"not valid YAML: {err}")
            return None
        if not isinstance(env, dict):
            problems.add(field, f"must be a mapping of runtime_env fields, got {type(env).__name__}")
            return None
        for key in env:
            if key not in RuntimeEnv.known_fields:
                close = difflib.get_close_matches(key, sorted(RuntimeEnv.known_fields), n=1)
                hint = f"; did you mean {close[0]!r}" if close else ""
                problems.add(f"{field}.{key}", f"not a Ray runtime_env field{hint}")
        for name, value in (env.get("env_vars") or {}).items():
            if SECRET_NAME.search(str(name)):
                problems.add(f"{field}.env_vars.{name}", "a credential written inline (the RayJob is readable "
                                                         "by anyone who can get it); set it in the pods' env "
                                                         "from a Secret")
        working_dir = env.get("working_dir")
        if working_dir != self.image.workdir:
            given = "not set" if working_dir is None else repr(working_dir)
            problems.add(f"{field}.working_dir", f"{given}: set it to {self.image.workdir}, the repo copy in "
                                                 f"the image (Dockerfile WORKDIR), so `jobs/...` and `configs/...` "
                                                 f"resolve on the driver and on every worker")
        if spec.get("submissionMode", "K8sJobMode") != "K8sJobMode" and isinstance(working_dir, str) \
                and "://" not in working_dir:
            problems.add("spec.submissionMode", "a local working_dir is uploaded by the submitter pod: only "
                                                "K8sJobMode has one")
        try:  # Ray's own validation, with the image's repo copy standing in for the repo here
            RuntimeEnv(**{**env, **({"working_dir": str(self.repo)} if working_dir == self.image.workdir else {})})
        except (TypeError, ValueError) as err:
            problems.add(field, f"Ray rejects this runtime_env: {err}")
        return working_dir if working_dir == self.image.workdir else None

    def _repo_path(self, given: str) -> Path:
        path = Path(given)
        if path.is_absolute() and path.is_relative_to(self.image.workdir):
            return self.repo / path.relative_to(self.image.workdir)
        return self.repo / path

    def check_entrypoint(self, entrypoint: Any, working_dir: str | None, problems: Problems):
        """The validated config the entrypoint runs, or None (problems reported)."""
        field = "spec.entrypoint"
        try:
            argv = shlex.split(entrypoint or "")
        except ValueError as err:
            problems.add(field, f"does not parse as a shell command: {err}")
            return None
        if len(argv) < 2 or argv[0] not in ("python", "python3") or not argv[1].endswith(".py"):
            problems.add(field, f"{entrypoint!r}: expected `python jobs/<job>.py [--config FILE] [key=value ...]`")
            return None
        if working_dir is None and not Path(argv[1]).is_absolute():
            return None  # reported by check_runtime_env: a relative path means nothing without a working_dir
        script = self._repo_path(argv[1])
        entrypoints = sorted(str(p.relative_to(self.repo)) for p in (self.repo / "jobs").glob("[!_]*.py"))
        if not script.is_file():
            close = difflib.get_close_matches(argv[1], entrypoints, n=1)
            problems.add(field, f"{argv[1]} does not exist in the repo{f'; did you mean {close[0]!r}' if close else ''}"
                                f" (job entrypoints: {', '.join(entrypoints)})")
            return None
        if str(script.relative_to(self.repo)) not in entrypoints:
            problems.add(field, f"{argv[1]} is not a job entrypoint ({', '.join(entrypoints)})")
            return None
        job, args = script.stem, argv[2:]
        if job in CONFIGLESS_JOBS:
            if args:
                problems.add(field, f"jobs/{job}.py takes no arguments, got {args}")
            return None
        config_file, overrides = None, []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--config" and i + 1 < len(args):
                config_file, i = args[i + 1], i + 2
                continue
            if arg.startswith("--config="):
                config_file = arg.partition("=")[2]
            elif "=" in arg and not arg.startswith("-"):
                overrides.append(arg)
            else:
                problems.add(field, f"unexpected argument {arg!r}: jobs/{job}.py takes --config FILE and "
                                    f"key.path=value overrides")
            i += 1
        if config_file is None:
            problems.add(field, f"jobs/{job}.py needs --config configs/{job}/<name>.yaml")
            return None
        config_path = self._repo_path(config_file)
        if not config_path.is_file():
            shipped = sorted(str(p.relative_to(self.repo)) for p in (self.repo / "configs" / job).glob("*.yaml"))
            problems.add(field, f"--config {config_file} does not exist in the repo "
                                f"(configs/{job}/: {', '.join(shipped)})")
            return None
        # The job's cwd is the working dir: relative paths in the config resolve against the repo copy.
        with _cwd(self.repo):
            try:
                return load_config(job, config_path, overrides)
            except ConfigError as err:
                problems.add(field, f"--config {config_file} with overrides {overrides} does not validate: {err}")
                return None

    def check_paths_are_mounted(self, config, groups: list[Group], problems: Problems) -> None:
        """Local absolute paths of the config (output_dir, inputs...) must be on a volume every pod mounts."""
        for key, value in _walk(config.model_dump(mode="json")):
            if not isinstance(value, str):
                continue
            local = value.removeprefix("file://")
            if not local.startswith("/"):
                continue
            missing = [g.name for g in groups
                       if not any(Path(local).is_relative_to(m.get("mountPath", "//"))
                                  for c in (g.pod.get("containers") or [])[:1] for m in c.get("volumeMounts") or [])]
            if missing:
                problems.add("spec.entrypoint", f"the config's {key}={value} is on no volume mounted by the "
                                                f"{', '.join(missing)} pods: the driver and every worker read or "
                                                f"write it. Mount the shared PVC there, or use an s3:// URI")

    def check_resources_fit(self, config, groups: list[Group], problems: Problems) -> None:
        """Each actor / Ray Train worker fits one pod, and the minimum count fits the cluster."""
        for what, count, cpus, gpus in _bundles(config):
            per_pod = [min(math.floor(g.cpus / cpus) if cpus else math.inf,
                           math.floor(g.gpus / gpus) if gpus else math.inf) for g in groups]
            total = sum(n * g.max_pods for n, g in zip(per_pod, groups) if n)
            if not any(per_pod):
                shapes = ", ".join(f"{g.name}: {g.cpus:g} CPU {g.gpus:g} GPU" for g in groups)
                problems.add("spec.entrypoint", f"{what} each need {cpus:g} CPU + {gpus:g} GPU, more than any pod of "
                                                f"the cluster has ({shapes})")
            elif total < count:
                problems.add("spec.entrypoint", f"{what}: {count} needed at once, but the cluster's pods hold at most "
                                                f"{total}; raise the GPU group's replicas or lower the count")

    # --- RayService: Serve import paths

    def check_serve_apps(self, spec: dict, problems: Problems) -> None:
        try:
            serve = yaml.safe_load(spec.get("serveConfigV2") or "") or {}
        except yaml.YAMLError as err:
            problems.add("spec.serveConfigV2", f"not valid YAML: {err}")
            return
        installed = {p.name for p in (self.repo / "platform").iterdir() if (p / "__init__.py").is_file()}
        for i, app in enumerate(serve.get("applications") or []):
            field = f"spec.serveConfigV2.applications[{i}].import_path"
            import_path = app.get("import_path", "")
            module, sep, attr = import_path.partition(":") if ":" in import_path else import_path.rpartition(".")
            if not (module and sep and attr):
                problems.add(field, f"{import_path!r}: expected module.path:attribute")
                continue
            if module.split(".")[0] not in installed and not (app.get("runtime_env") or {}).get("working_dir"):
                problems.add(field, f"{import_path!r}: {module.split('.')[0]!r} is not a package the image installs "
                                    f"({sorted(installed)}) and the app has no runtime_env.working_dir")
                continue
            try:
                target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                problems.add(field, f"{import_path!r} does not resolve: {err}")
                continue
            if not callable(target) and type(target).__name__ != "Application":
                problems.add(field, f"{import_path!r} is a {type(target).__name__}, not an app builder or Application")


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _bundles(config) -> list[tuple[str, int, float, float]]:
    """(what, how many must run at once, CPUs each, GPUs each) for a job's Ray actors / workers."""
    if hasattr(config, "run_stages"):  # generate
        stages = config.run_stages
        out = []
        if "construct" in stages and config.construction is not None:
            pool = config.construction.actors
            out.append(("construction.actors (min_actors)", pool.min_actors, pool.num_cpus, pool.num_gpus))
        if "dialogues" in stages:
            pool = config.actors
            out.append(("actors (min_actors)", pool.min_actors, pool.num_cpus, pool.num_gpus))
        return out
    if hasattr(config, "num_workers"):  # train: Ray Train starts all workers together
        return [("Ray Train workers (num_workers)", config.num_workers, config.cpus_per_worker,
                 1 if config.use_gpu else 0)]
    return []
