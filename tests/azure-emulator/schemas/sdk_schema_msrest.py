"""Derive a compact wire-level JSON schema from msrest-style azure-mgmt-* SDK models
(`_attribute_map` / `_validation`), in the format of the sdk-derived schemas beside it.

Usage (the SDK venv of .ci/azure-sdk-requirements.txt):
  python sdk_schema_msrest.py <package> <module.models> <RootModel> [<RootModel>...] > schema.json
Flattened keys (`properties.principalId`) become a nested `<Model>Properties` definition, as
they are on the wire. readOnly and required come from `_validation`; enums from the
`Union[str, Enum]` annotations of the model's `__init__`.
"""
import enum
import importlib
import importlib.metadata as md
import inspect
import json
import sys
import typing


def main():
    pkg, modname, roots = sys.argv[1], sys.argv[2], sys.argv[3:]
    mod = importlib.import_module(modname)
    defs, enums = {}, {}

    def enum_of(cls, attr):
        try:
            hints = typing.get_type_hints(cls.__init__, globalns={**vars(importlib.import_module(cls.__module__)), "_models": mod})
        except Exception:
            return None
        t = hints.get(attr)
        for a in typing.get_args(t) or ():
            for b in typing.get_args(a) or (a,):
                if inspect.isclass(b) and issubclass(b, enum.Enum):
                    enums[b.__name__] = [m.value for m in b]
                    return b
        return None

    def tname(t, cls, attr):
        if t.startswith("[") and t.endswith("]"):
            return {"type": "array", "items": tname(t[1:-1], cls, attr)}
        if t.startswith("{") and t.endswith("}"):
            return {"type": "object", "additionalProperties": tname(t[1:-1], cls, attr)}
        simple = {"str": "string", "bool": "boolean", "int": "integer", "float": "number",
                  "iso-8601": "string", "object": None}
        if t in simple:
            s = {"type": simple[t]} if simple[t] else {}
            if t == "iso-8601":
                s["format"] = "date-time"
            e = enum_of(cls, attr) if t == "str" else None
            if e is not None:
                s.update({"x-enum": e.__name__, "enum": [m.value for m in e]})
            return s
        if hasattr(mod, t):
            visit(getattr(mod, t))
            return {"$ref": "#/definitions/" + t}
        return {"type": t}

    def visit(cls):
        if cls.__name__ in defs:
            return
        defs[cls.__name__] = None
        validation = getattr(cls, "_validation", {})
        props, nested, sdk_attr = {}, {}, {}
        for attr, spec in getattr(cls, "_attribute_map", {}).items():
            s = tname(spec["type"], cls, attr)
            v = validation.get(attr, {})
            if v.get("readonly"):
                s["readOnly"] = True
            if v.get("required"):
                s["required"] = True
            path = spec["key"].replace("\\.", "\0").split(".")
            path = [p.replace("\0", ".") for p in path]
            if len(path) == 1:
                props[path[0]] = s
                sdk_attr[path[0]] = attr
            else:
                nested.setdefault(path[0], {})[path[1]] = s
        for outer, inner in nested.items():
            name = cls.__name__ + outer[0].upper() + outer[1:]
            defs[name] = {"properties": inner, "x-flattened-from": cls.__name__}
            props[outer] = {"$ref": "#/definitions/" + name}
            if any(p.get("required") for p in inner.values()):
                props[outer]["required"] = True
        defs[cls.__name__] = {"properties": props, "sdkAttr": sdk_attr}

    for r in roots:
        visit(getattr(mod, r))
    json.dump({"note": "Wire-level (REST JSON names) schema derived by introspecting the msrest-style Python SDK models; flattened properties.* keys are nested again; readOnly/required from _validation.",
               "source_package": f"{pkg}=={md.version(pkg)}", "source_module": modname, "roots": roots,
               "definitions": defs, "enums": enums}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


main()
