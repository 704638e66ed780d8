"""Offline checks of the built manifests, before anything is applied:

- every Kubernetes object strictly (an unknown field is an error) against the
  schemas of Kubernetes KUBERNETES_VERSION that the kubernetes-validate package
  ships;
- every custom resource against its operator's CRD, vendored in k8s/crds/: its
  apiVersion must be served and not deprecated there; it must match that
  version's openAPIV3Schema, where an unknown field is an error (the API server
  would drop it silently); the CRD's CEL rules (x-kubernetes-validations) must
  hold; and its metadata must be a valid ObjectMeta.

    python -m yigongti_deploy.k8scheck k8s/overlays/prod [k8s/overlays/dev ...]
    python -m yigongti_deploy.k8scheck --release k8s/overlays/prod

--release also refuses any container image not pinned by digest (the release
pipeline's last gate, after `kustomize edit set image <name>=<image>@sha256:...`).

Nothing here touches the network (the tests prove it by forbidding sockets).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.37.0"
REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "k8s" / "crds"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the Cluster CRD is 460 kB


def find_kubectl() -> str | None:
    """$KUBECTL, else the one `make setup` put in the venv, else the machine's."""
    candidates = [os.environ.get("KUBECTL"), str(Path(sys.executable).parent / "kubectl"),
                  shutil.which("kubectl")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def kustomize(path: Path, kubectl: str) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(path)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


# --- CRDs ---------------------------------------------------------------------

# The second line of a vendored CRD file says where it comes from.
SOURCE = re.compile(r"^# Source: (?P<repo>[\w.-]+/[\w.-]+) \(GitHub\), release tag (?P<tag>\S+),"
                    r" path (?P<path>\S+) \(git blob (?P<blob>[0-9a-f]{40})\)\.$", re.M)


@dataclass(frozen=True)
class Crd:
    name: str
    group: str
    kind: str
    versions: dict[str, dict[str, Any]]  # version name → its entry in spec.versions
    repo: str
    tag: str
    path: str
    blob: str  # git's id of the vendored content (below the header)


@cache
def load_crds(directory: Path = CRDS) -> dict[tuple[str, str], Crd]:
    """(group, kind) → CRD, for every file in `directory`."""
    crds = {}
    for file in sorted(directory.glob("*.yaml")):
        text = file.read_text("utf-8")
        source = SOURCE.search(text)
        if source is None:
            raise ValueError(f"{file}: no '# Source: ...' line naming repo, tag and path")
        doc = yaml.load(text, Loader=_Loader)
        spec = doc["spec"]
        crds[(spec["group"], spec["names"]["kind"])] = Crd(
            doc["metadata"]["name"], spec["group"], spec["names"]["kind"],
            {v["name"]: v for v in spec["versions"]}, **source.groupdict())
    return crds


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema as a JSON Schema that also refuses unknown fields."""
    s = dict(schema)
    for key in ("x-kubernetes-validations", "description"):
        s.pop(key, None)
    if s.pop("x-kubernetes-int-or-string", False):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
    if isinstance(s.get("items"), dict):
        s["items"] = _strict(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _strict(s["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [_strict(x) for x in s[key]]
    if s.get("x-kubernetes-embedded-resource"):
        s.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            s["properties"].setdefault(field, {"type": "string"})
        s["properties"].setdefault("metadata", {"type": "object"})
    if (s.get("type") == "object" and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    return s


@cache
def _validator(crd_name: str, version: str) -> jsonschema.Draft4Validator:
    crd = next(c for c in load_crds().values() if c.name == crd_name)
    schema = _strict(copy.deepcopy(crd.versions[version]["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # checked as ObjectMeta instead
    # OpenAPI 3.0 schemas are closest to draft 4 (boolean exclusiveMinimum).
    return jsonschema.Draft4Validator(schema)


@cache
def _object_meta_validator() -> jsonschema.Validator:
    """Kubernetes' strict ObjectMeta schema, from kubernetes-validate's files."""
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    definitions = schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json",
        KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ Registry()
    ref = definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


_CEL = celpy.Environment()


@cache
def _cel_program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def _cel_holds(rule: str, value: Any) -> bool:
    try:
        result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def _cel_problems(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """The CEL rules of `schema` and of the schemas below it that `value` breaks.
    Transition rules (those reading oldSelf) only apply to updates: skipped."""
    found = []
    for rule in schema.get("x-kubernetes-validations", ()):
        if "oldSelf" in rule["rule"]:
            continue
        if not _cel_holds(rule["rule"], value):
            found.append(f"{path or '.'}: {rule.get('message') or rule['rule']}")
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                found += _cel_problems(sub, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _cel_problems(schema["items"], item, f"{path}[{i}]")
    return found


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def custom_resource_problems(obj: dict[str, Any], crd: Crd) -> list[str]:
    version = obj["apiVersion"].rpartition("/")[2]
    entry = crd.versions.get(version)
    if entry is None or not entry.get("served"):
        served = sorted(v for v, e in crd.versions.items() if e.get("served"))
        return [f"{obj['apiVersion']} is not served by {crd.repo} {crd.tag}"
                f" (served: {', '.join(served)})"]
    found = []
    if entry.get("deprecated"):
        found.append(f"{obj['apiVersion']} is deprecated: {entry.get('deprecationWarning', '')}")
    found += [f"{_path(e) or '.'}: {e.message}"
              for e in _validator(crd.name, version).iter_errors(obj)]
    found += [f".metadata{_path(e)}: {e.message}"
              for e in _object_meta_validator().iter_errors(obj.get("metadata", {}))]
    if not found:  # CEL rules assume a structurally valid object
        found += _cel_problems(entry["schema"]["openAPIV3Schema"], obj, "")
    return found


# --- everything ---------------------------------------------------------------

def kubernetes_problems(obj: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{_path(e) or '.'}: {e.message}"]
    return []


def problems(objects: list[dict[str, Any]], crds: dict[tuple[str, str], Crd] | None = None
             ) -> list[str]:
    """One line per problem, "<apiVersion> <Kind>/<name>: <what>"; [] when all is well."""
    crds = load_crds() if crds is None else crds
    found = []
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        crd = crds.get((group, obj["kind"]))
        try:
            lines = (custom_resource_problems(obj, crd) if crd is not None
                     else kubernetes_problems(obj))
        except kubernetes_validate.SchemaNotFoundError:
            lines = ["no schema: neither a Kubernetes kind nor a CRD vendored in k8s/crds/"]
        name = obj.get("metadata", {}).get("name", "?")
        found += [f"{obj['apiVersion']} {obj['kind']}/{name}: {line}" for line in lines]
    return found


DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return [spec]
    if obj["kind"] == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    template = spec.get("template", {})
    return [template["spec"]] if isinstance(template.get("spec"), dict) else []


def unpinned_images(objects: list[dict[str, Any]]) -> list[str]:
    """"<Kind>/<name>: <image>" for every container image without a digest."""
    found = []
    for obj in objects:
        for pod in _pod_specs(obj):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if not DIGEST.search(c.get("image", "")):
                    found.append(f"{obj['kind']}/{obj['metadata']['name']}: {c.get('image')}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.k8scheck",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("kustomizations", nargs="+", type=Path)
    parser.add_argument("--release", action="store_true",
                        help="also refuse images not pinned by digest")
    args = parser.parse_args(argv)
    kubectl = find_kubectl()
    if kubectl is None:
        print("kubectl not found (make setup installs one)", file=sys.stderr)
        return 2
    failed = False
    for path in args.kustomizations:
        objects = kustomize(path, kubectl)
        found = problems(objects)
        if args.release:
            found += [f"not pinned by digest: {line}" for line in unpinned_images(objects)]
        for line in found:
            print(f"{path}: {line}")
        print(f"{path}: {len(objects)} objects, {len(found)} problems", file=sys.stderr)
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
