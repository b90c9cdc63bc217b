"""The published JSON Schemas of the plan format, and the validator the plan reader runs.

`alpa-plan-2.schema.json` (beside this file) is the contract of the format written today;
`alpa-plan-1.schema.json` the one of the format before it, which is still read (and converted,
`plans/io.py`). `validate` checks a parsed JSON document against the schema of its version and
raises an `InputError` that names the JSON path of the first problem, e.g.
``plan.json: stages[2].devices[0]: expected [host, gpu], found 7``.

The validator understands the subset of JSON Schema (draft 2020-12) the file uses: `type`,
`const`, `enum`, `minimum`, `pattern`, `properties`, `required`, `additionalProperties`, `items`,
`prefixItems`, `minItems` and local `$ref`s. A subschema with a `title` is read as one value: a
problem anywhere inside it is reported at its path as "expected TITLE". The tests check that
`jsonschema` agrees with this validator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from plans.errors import InputError
from plans.plan import SCHEMA, SCHEMAS_READ


def schema_path(version: str = SCHEMA) -> Path:
    """The schema file of format `version` ("alpa-plan/2" -> alpa-plan-2.schema.json)."""
    return Path(__file__).with_name(version.replace("/", "-") + ".schema.json")


_TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}
_MISSING = object()
_THIS_FORMAT = "<format>"  # replaced by the document's version in messages


@cache
def load_schema(version: str = SCHEMA) -> Mapping[str, Any]:
    """The published schema of format `version`, parsed."""
    schema: Mapping[str, Any] = json.loads(schema_path(version).read_text(encoding="utf-8"))
    return schema


@dataclass(frozen=True)
class _Problem:
    path: str
    expected: str
    found: object  # the offending value, or _MISSING


def check_version(document: object, source: str) -> str:
    """The format version of a plan document; refuses one this alpa-plan does not read, saying
    which it is and which it reads. A document without a version is checked as the current
    format (the schema then names what is missing)."""
    if isinstance(document, dict) and isinstance(document.get("schema"), str):
        found = str(document["schema"])
        if found not in SCHEMAS_READ:
            known = " or ".join(f"'{version}'" for version in SCHEMAS_READ)
            raise InputError(source, "schema", f"{known} (this alpa-plan reads them)", repr(found))
        return found
    return SCHEMA


def validate(document: object, source: str, version: str = SCHEMA) -> None:
    """Raise `InputError` naming the first place where `document` breaks its schema."""
    schema = load_schema(version)
    problem = _check(schema, schema, document, "")
    if problem is not None:
        expected = problem.expected.replace(_THIS_FORMAT, version)
        raise InputError(source, problem.path, expected, _shown(problem.found))


def _shown(value: object) -> str:
    if value is _MISSING:
        return "nothing"
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _check(root: Mapping[str, Any], schema: Any, value: object, path: str) -> _Problem | None:
    if schema is False:
        return _Problem(path, "nothing here", value)
    if "$ref" in schema:
        schema = _resolve(root, schema["$ref"])
    problem = _check_scalar(schema, value, path) or _check_container(root, schema, value, path)
    if problem is not None and "title" in schema:
        return _Problem(path, schema["title"], value)
    return problem


def _resolve(root: Mapping[str, Any], reference: str) -> Any:
    prefix = "#/$defs/"
    if not reference.startswith(prefix):
        raise ValueError(f"only local $defs references are supported, found {reference!r}")
    return root["$defs"][reference[len(prefix) :]]


def _check_scalar(schema: Mapping[str, Any], value: object, path: str) -> _Problem | None:
    if "const" in schema and value != schema["const"]:
        return _Problem(path, repr(schema["const"]), value)
    if "enum" in schema and value not in schema["enum"]:
        return _Problem(path, "one of " + ", ".join(map(repr, schema["enum"])), value)
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        return _Problem(path, _TYPE_NAMES[kind], value)
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        return _Problem(path, f"{_TYPE_NAMES[str(kind)]} >= {schema['minimum']}", value)
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        return _Problem(path, f"a string matching {schema['pattern']}", value)
    return None


def _has_type(value: object, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    python_type = {"object": dict, "array": list, "string": str, "boolean": bool}[kind]
    return isinstance(value, python_type)


def _check_container(
    root: Mapping[str, Any], schema: Mapping[str, Any], value: object, path: str
) -> _Problem | None:
    if isinstance(value, dict):
        return _check_object(root, schema, value, path)
    if isinstance(value, list):
        return _check_array(root, schema, value, path)
    return None


def _check_object(
    root: Mapping[str, Any], schema: Mapping[str, Any], value: dict[str, Any], path: str
) -> _Problem | None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for key, subschema in properties.items():
        if key in value:
            problem = _check(root, subschema, value[key], _key_path(path, key))
            if problem is not None:
                return problem
        elif key in schema.get("required", ()):
            return _Problem(_key_path(path, key), "a value", _MISSING)
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties or extra is True:
            continue
        if extra is False:
            return _Problem(_key_path(path, key), f"no such field in {_THIS_FORMAT}", item)
        problem = _check(root, extra, item, _key_path(path, key))
        if problem is not None:
            return problem
    return None


def _check_array(
    root: Mapping[str, Any], schema: Mapping[str, Any], value: list[Any], path: str
) -> _Problem | None:
    if len(value) < schema.get("minItems", 0):
        count = schema["minItems"]
        return _Problem(path, f"at least {count} item{'s' if count > 1 else ''}", value)
    leading = schema.get("prefixItems", [])
    for index, item in enumerate(value):
        subschema = leading[index] if index < len(leading) else schema.get("items", True)
        if subschema is True:
            continue
        problem = _check(root, subschema, item, f"{path}[{index}]")
        if problem is not None:
            return problem
    return None


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
