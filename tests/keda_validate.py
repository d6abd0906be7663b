"""Validates KEDA ScaledObjects in a rendered manifest file against KEDA's
CRD schema, offline: cloudcoil's models are generated from KEDA 2.16's CRDs
(types, required fields, enums). Pydantic ignores fields a model does not
know, so an object is also dumped back and compared with its input: a field
the CRD does not define (a typo) is reported, not silently dropped.

Usage: keda_validate.py RENDERED.yaml  -> one "ok KIND NAME" line per
ScaledObject; exits 1 with the errors otherwise."""

import sys

import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject


def unknown(given, kept, path=""):
    """Paths present in `given` that validation dropped."""
    if isinstance(given, dict):
        out = []
        for key, value in given.items():
            if not isinstance(kept, dict) or key not in kept:
                out.append(f"{path}.{key}")
            else:
                out.extend(unknown(value, kept[key], f"{path}.{key}"))
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in unknown(g, k, f"{path}[{i}]")]
    return []


def main(path):
    errors, seen = [], 0
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        if doc.get("kind") != "ScaledObject":
            continue
        seen += 1
        name = doc.get("metadata", {}).get("name", "?")
        try:
            obj = ScaledObject.model_validate(doc)
        except Exception as e:  # pydantic's ValidationError names each field
            errors.append(f"ScaledObject {name}: {e}")
            continue
        dropped = unknown(doc, obj.model_dump(by_alias=True, exclude_unset=True, mode="json"))
        if dropped:
            errors.append(f"ScaledObject {name}: fields KEDA's CRD does not define: {', '.join(dropped)}")
        else:
            print(f"ok ScaledObject {name}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    if seen == 0:
        print("no ScaledObject in the file", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
