"""Offline validation of KubeRay manifests (RayCluster, RayJob, RayService) against the CRDs.

Catches what ``kubectl apply --validate=strict`` would reject, without a cluster: wrong types,
missing required fields and, above all, misspelt keys. The API server silently prunes an
unknown field like ``rayStartParam`` under the default validation, so a typo otherwise turns
into a cluster that quietly ignores part of its config.

Not checked: CEL rules (``x-kubernetes-validations``, e.g. immutability) and ``format``.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

log = logging.getLogger(__name__)

RAY_GROUP = "ray.io"
CRD_DIR_ENV = "ULTRACHAT_KUBERAY_CRDS"

# The CRD files are ~1 MB each; the C loader parses them ~20x faster when libyaml is present.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Root metadata is only ``type: object`` in CRDs (the API server checks it as ObjectMeta), so
# these keys are checked by hand: the user-settable ObjectMeta fields.
_OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "labels", "annotations", "finalizers",
    "ownerReferences", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
}
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def default_crd_dir(repo_root: str | os.PathLike) -> Path:
    """``$ULTRACHAT_KUBERAY_CRDS`` if set, else ``<repo_root>/../shared/kuberay-crds`` (CI)."""
    env = os.environ.get(CRD_DIR_ENV)
    if env:
        return Path(env)
    return Path(repo_root).resolve().parent / "shared" / "kuberay-crds"


def _to_jsonschema(node: Any) -> Any:
    """Rewrite one OpenAPI v3 (structural) schema node into plain JSON Schema, recursively.

    ``format`` is left alone and unchecked (no format checker is attached): in the KubeRay
    CRDs it only marks int32/int64 integers and date-time fields of ``status``.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _to_jsonschema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _to_jsonschema(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_to_jsonschema(s) for s in out[key]]

    # OpenAPI's ``nullable`` has no JSON Schema keyword: widen the type instead.
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    # Quantities/ports are int-or-string; controller-gen adds the anyOf, hand-written CRDs may not.
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    # Strict mode: an object with declared properties and no map/preserve escape hatch is closed.
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        if out.get("x-kubernetes-embedded-resource"):
            for k in ("apiVersion", "kind", "metadata"):
                out["properties"].setdefault(k, {})
        out["additionalProperties"] = False
    return out


def load_crds(crd_dir: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """Map ``("ray.io/v1", "RayCluster")`` -> JSON Schema, for each served CRD version."""
    return {key: schema for key, (schema, _) in _load_crds(str(Path(crd_dir).resolve())).items()}


@functools.lru_cache(maxsize=8)  # parsing ~3 MB of CRDs once per process, not once per manifest
def _load_crds(crd_dir: str) -> dict[tuple[str, str], tuple[dict, bool]]:
    """Like load_crds, each schema paired with its version's ``deprecated`` flag."""
    files = sorted(p for p in Path(crd_dir).iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        raise FileNotFoundError(f"no CRD YAML files in {crd_dir}")
    index: dict[tuple[str, str], tuple[dict, bool]] = {}
    for path in files:
        for crd in yaml.load_all(path.read_text(), Loader=_Loader):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec.get("versions", []):
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if not version.get("served") or schema is None:
                    continue
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                index[key] = (_to_jsonschema(schema), bool(version.get("deprecated")))
    log.debug("loaded %d CRD versions from %s", len(index), crd_dir)
    return index


def _fmt_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.match(p):
            out += f".{p}" if out else p
        else:  # e.g. resources.limits["nvidia.com/gpu"]
            out += f"[{p!r}]"
    return out or "<root>"


def _suggest(key: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _describe(error: jsonschema.ValidationError) -> list[str]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = error.schema.get("properties", {})
        return [
            f"{_fmt_path(path + [k])}: unknown field {k!r}{_suggest(k, allowed)}"
            for k in error.instance if k not in allowed
        ]
    if error.schema.get("x-kubernetes-int-or-string"):
        if error.validator == "anyOf":
            return [f"{_fmt_path(path)}: {error.instance!r} must be an integer or a string"]
        if error.validator == "pattern":  # int-or-string + pattern is how CRDs spell Quantity
            return [f"{_fmt_path(path)}: {error.instance!r} is not a quantity (e.g. 2, 500m, 16Gi)"]
    return [f"{_fmt_path(path)}: {error.message}"]


def _check_metadata(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return ["metadata: required mapping is missing"]
    errors = [
        f"metadata.{k}: unknown field {k!r}{_suggest(k, _OBJECT_META_FIELDS)}"
        for k in meta if k not in _OBJECT_META_FIELDS
    ]
    name = meta.get("name")
    if not name:
        errors.append("metadata.name: required field is missing (kubectl apply needs a name)")
    elif not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a valid name (lowercase a-z, 0-9, '-', '.')")
    return errors


def validate_manifest(doc: dict, crd_dir: str | os.PathLike) -> list[str]:
    """Every problem in one manifest, as ``"<json path>: <message>"`` strings; [] when valid."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["<root>: apiVersion and kind must both be set"]
    crds = _load_crds(str(Path(crd_dir).resolve()))
    if (api_version, kind) not in crds:
        kinds = sorted({k for _, k in crds})
        return [f"<root>: no CRD in {crd_dir} serves {api_version} {kind}{_suggest(kind, kinds)}"
                f" (known kinds: {', '.join(kinds)})"]
    schema, deprecated = crds[(api_version, kind)]
    if deprecated:
        log.warning("%s %s is deprecated; use ray.io/v1", api_version, kind)

    errors = _check_metadata(doc.get("metadata"))
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: _fmt_path(e.absolute_path)):
        if list(error.absolute_path) == ["metadata"]:
            continue  # already reported by _check_metadata
        errors.extend(_describe(error))
    return errors


def validate_file(path: str | os.PathLike, crd_dir: str | os.PathLike) -> list[str]:
    """Validate every ``ray.io/*`` document of a (multi-document) YAML file.

    Other documents (a PVC, a Secret...) are skipped: their schemas are not in the CRD dir.
    Errors are prefixed ``<file>:<document index> <kind>/<name>: ``.
    """
    try:
        docs = list(yaml.load_all(Path(path).read_text(), Loader=_Loader))
    except yaml.YAMLError as exc:
        return [f"{path}: invalid YAML: {exc}"]
    errors = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        api_version = doc.get("apiVersion")
        if not (isinstance(api_version, str) and api_version.startswith(f"{RAY_GROUP}/")):
            log.debug("%s:%d: skipping %s %s", path, i, api_version, doc.get("kind"))
            continue
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        prefix = f"{path}:{i} {doc.get('kind')}/{meta.get('name', '<unnamed>')}"
        errors.extend(f"{prefix}: {e}" for e in validate_manifest(doc, crd_dir))
    return errors
