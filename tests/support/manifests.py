"""Finding the repo's Kubernetes manifests, for the tests that check them (schema and cross-references).

Every KubeRay manifest anywhere in the repo is found, not a fixed list, so a new RayJob/RayService
file is checked the moment it exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest
import yaml

import kuberay_schema as kuberay

REPO_ROOT = Path(__file__).resolve().parents[2]
EXCLUDED_DIRS = {".venv", "venv", ".git", "outputs", "node_modules", "__pycache__"}
RAY_API_VERSION = re.compile(r"^\s*apiVersion:\s*['\"]?ray\.io/", re.MULTILINE)


def yaml_files(root: Path = REPO_ROOT) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith(".")
        )
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.suffix in (".yaml", ".yml"):
                yield path


def load_documents(path: Path) -> list:
    """The YAML documents of ``path``; [] when it does not parse (schema validation reports why)."""
    try:
        return list(yaml.safe_load_all(path.read_text(errors="replace")))
    except yaml.YAMLError:
        return []


def _is_kuberay_file(path: Path) -> bool:
    text = path.read_text(errors="replace")
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        # Keep a broken file that looks like a KubeRay manifest, so validation reports why.
        return bool(RAY_API_VERSION.search(text))
    return any(
        isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("ray.io/") for d in docs
    )


def find_kuberay_manifests(root: Path = REPO_ROOT) -> list[Path]:
    return [path for path in yaml_files(root) if _is_kuberay_file(path)]


def kubernetes_objects(root: Path = REPO_ROOT) -> list[dict]:
    """Every document with apiVersion + kind + metadata.name in the repo's YAML files (PVCs, Secrets...)."""
    return [
        doc for path in yaml_files(root) for doc in load_documents(path)
        if isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")
        and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name")
    ]


MANIFESTS = find_kuberay_manifests()


def manifest_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


@pytest.fixture
def crd_dir() -> Path:
    path = kuberay.default_crd_dir(REPO_ROOT)
    if not path.is_dir():
        message = (
            f"KubeRay CRDs not found at {path} (clone them beside the repo as "
            f"shared/kuberay-crds, or set {kuberay.CRD_DIR_ENV})"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing CRD dir is a broken checkout, not a skip
        pytest.skip(message)
    return path
