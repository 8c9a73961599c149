"""Request validation against Discord's official OpenAPI description (tests/data/openapi.json)."""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

log = logging.getLogger(__name__)

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "openapi.json"
SPEC_URI = "urn:discord-emulator:openapi"
HTTP_METHODS = ("get", "put", "post", "patch", "delete")
DISCRIMINATOR_KEY = "x-emulator-discriminator"
NULL_SCHEMA = {"type": "null"}
SNOWFLAKE_PATTERN = "^(0|[1-9][0-9]*)$"
PERMISSION_FIELDS = frozenset({"default_member_permissions", "permissions", "allow", "deny"})
# Bots may send at most 2000 characters; the spec's 4000 is the Nitro limit for users.
BOT_CONTENT_LIMIT_SCHEMAS = (
    "MessageCreateRequest",
    "MessageEditRequestPartial",
    "BaseCreateMessageCreateRequest",
)
BOT_CONTENT_LIMIT = 2000
TRUE_STRINGS = frozenset({"true", "1", "True", "TRUE"})
FALSE_STRINGS = frozenset({"false", "0", "False", "FALSE"})

_DISCORD_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "required": "BASE_TYPE_REQUIRED",
    "enum": "BASE_TYPE_CHOICES",
    "const": "BASE_TYPE_CHOICES",
    "minimum": "NUMBER_TYPE_MIN",
    "maximum": "NUMBER_TYPE_MAX",
    "pattern": "STRING_TYPE_REGEX",
    "uniqueItems": "BASE_TYPE_UNIQUE",
    "type": "BASE_TYPE_BAD_TYPE",
}


@dataclass(frozen=True)
class Operation:
    """One operation of the spec: method, path template and its parameters."""

    method: str
    template: str
    operation_id: str
    spec: Mapping[str, Any]
    parameters: Mapping[tuple[str, str], Mapping[str, Any]]

    @property
    def request_content_types(self) -> tuple[str, ...]:
        """Return the request body media types the operation accepts."""
        body = self.spec.get("requestBody") or {}
        return tuple(body.get("content", {}))

    @property
    def body_required(self) -> bool:
        """Return whether the operation requires a request body."""
        return bool((self.spec.get("requestBody") or {}).get("required"))


@dataclass(frozen=True)
class Violation:
    """One schema violation found in a request."""

    location: str
    path: tuple[str | int, ...]
    message: str
    keyword: str

    @property
    def json_path(self) -> str:
        """Return the violation's location as a JSONPath-like string."""
        out = "$"
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out

    def describe(self, method: str, template: str) -> str:
        """Return a one-line readable description."""
        return f"{method} {template}: {self.location} {self.json_path}: {self.message} [{self.keyword}]"


def _short(value: Any, limit: int = 60) -> str:
    """Return a short repr of a value for messages."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message_for(error: ValidationError) -> tuple[tuple[str | int, ...], str, str]:
    """Return (path, message, keyword) for a jsonschema error, with short, Discord-like wording."""
    path = tuple(error.absolute_path)
    keyword = str(error.validator)
    value = error.validator_value
    inst = error.instance
    if keyword in ("maxLength", "minLength", "maxItems", "minItems"):
        size = len(inst) if hasattr(inst, "__len__") else "?"
        bound = "or fewer" if keyword.startswith("max") else "or more"
        return path, f"must be {value} {bound} in length (got {size})", keyword
    if keyword == "required":
        missing = [p for p in value if isinstance(inst, dict) and p not in inst]
        name = missing[0] if missing else "?"
        return (*path, name), "this field is required", keyword
    if keyword == "type":
        return path, f"{_short(inst)} is not of type {value}", keyword
    if keyword in ("enum", "const"):
        allowed = value if keyword == "enum" else [value]
        return path, f"{_short(inst)} is not one of {allowed}", keyword
    if keyword == "pattern":
        return path, f"{_short(inst)} does not match {value!r}", keyword
    if keyword in ("minimum", "maximum"):
        return (
            path,
            f"{_short(inst)} is {'less' if keyword == 'minimum' else 'greater'} than {value}",
            keyword,
        )
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return path, message, keyword


def _union_keyword(
    validator: Any, subschemas: list[Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """Validate anyOf/oneOf like Discord: discriminate on `type`, skip null branches, else anyOf."""
    candidates = list(enumerate(subschemas))
    if instance is not None:
        non_null = [(i, s) for i, s in candidates if s != NULL_SCHEMA]
        candidates = non_null or candidates
    disc = schema.get(DISCRIMINATOR_KEY)
    if disc and isinstance(instance, dict):
        prop = disc["property"]
        if prop not in instance:
            yield ValidationError(
                f"{prop!r} is a required property",
                validator="required",
                validator_value=[prop],
                instance=instance,
            )
            return
        index = disc["mapping"].get(json.dumps(instance[prop]))
        if index is None:
            allowed = sorted(json.loads(k) for k in disc["mapping"])
            yield ValidationError(
                f"{_short(instance[prop])} is not one of {allowed}",
                validator="enum",
                validator_value=allowed,
                instance=instance[prop],
                path=[prop],
            )
            return
        yield from validator.descend(instance, subschemas[index], schema_path=index)
        return
    if len(candidates) == 1:
        index, sub = candidates[0]
        yield from validator.descend(instance, sub, schema_path=index)
        return
    all_errors: list[ValidationError] = []
    for index, sub in candidates:
        errors = list(validator.descend(instance, sub, schema_path=index))
        if not errors:
            return
        all_errors.extend(errors)
    yield ValidationError(
        f"{_short(instance)} is not valid under any of the given schemas",
        validator="anyOf",
        validator_value=subschemas,
        instance=instance,
        context=all_errors,
    )


DiscordValidator = validators.extend(
    Draft202012Validator, validators={"anyOf": _union_keyword, "oneOf": _union_keyword}
)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Yield every dict in a JSON document."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _discriminator_values(schemas: Mapping[str, Any], ref: Any) -> list[Any] | None:
    """Return the allowed values of `type` of a referenced component schema, if it pins them."""
    if (
        not isinstance(ref, dict)
        or set(ref) != {"$ref"}
        or not ref["$ref"].startswith("#/components/schemas/")
    ):
        return None
    target = schemas.get(ref["$ref"].rsplit("/", 1)[1])
    prop = (target or {}).get("properties", {}).get("type")
    if not isinstance(prop, dict):
        return None
    if isinstance(prop.get("enum"), list):
        return list(prop["enum"])
    if "const" in prop:
        return [prop["const"]]
    return None


def prepare_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the spec adjusted to how Discord really validates bot requests."""
    spec = copy.deepcopy(raw)
    schemas = spec["components"]["schemas"]
    # Discord accepts snowflakes as JSON strings or integers; discord.py sends both.
    schemas["SnowflakeType"] = {
        "type": ["string", "integer"],
        "pattern": SNOWFLAKE_PATTERN,
        "minimum": 0,
        "maximum": 2**64 - 1,
        "format": "snowflake",
    }
    for name in BOT_CONTENT_LIMIT_SCHEMAS:
        content = schemas.get(name, {}).get("properties", {}).get("content")
        if isinstance(content, dict) and "maxLength" in content:
            content["maxLength"] = BOT_CONTENT_LIMIT
    for node in list(_walk(spec)):
        # Permission bitfields are documented as strings; the spec types them as integers.
        props = node.get("properties")
        if isinstance(props, dict):
            for key in PERMISSION_FIELDS & set(props):
                prop = props[key]
                types = prop.get("type") if isinstance(prop, dict) else None
                if types == "integer" or (isinstance(types, list) and "integer" in types):
                    props[key] = {"anyOf": [prop, {"type": "string", "pattern": "^[0-9]{1,20}$"}]}
        for keyword in ("anyOf", "oneOf"):
            branches = node.get(keyword)
            if not isinstance(branches, list):
                continue
            mapping: dict[str, int] = {}
            ok = True
            real = [(i, b) for i, b in enumerate(branches) if b != NULL_SCHEMA]
            for index, branch in real:
                values = _discriminator_values(schemas, branch)
                if values is None:
                    ok = False
                    break
                for value in values:
                    key = json.dumps(value)
                    if key in mapping:
                        ok = False
                    mapping[key] = index
            if ok and len(real) >= 2:
                node[DISCRIMINATOR_KEY] = {"property": "type", "mapping": mapping}
    return spec


def _segments(path: str) -> list[str]:
    """Split a URL path into segments."""
    return path.strip("/").split("/") if path.strip("/") else []


def _pointer(*parts: str) -> str:
    """Return a JSON pointer fragment for the given keys."""
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class OpenAPISpec:
    """Discord's OpenAPI document, indexed for route matching and cached request-body validators."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        with path.open("rb") as fh:
            raw = json.load(fh)
        self.document = prepare_spec(raw)
        self.registry: Registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(self.document, default_specification=DRAFT202012)
        )
        self._templates: list[tuple[str, list[str]]] = [(t, _segments(t)) for t in self.document["paths"]]
        self._validators: dict[tuple[str, str, str], Any] = {}
        self._param_validators: dict[str, Any] = {}

    def match_template(self, path: str) -> tuple[str, dict[str, str]] | None:
        """Return the most specific path template matching a concrete path, with its parameters."""
        segs = _segments(path)
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for template, tsegs in self._templates:
            if len(tsegs) != len(segs):
                continue
            params: dict[str, str] = {}
            score: list[int] = []
            for tseg, seg in zip(tsegs, segs):
                if tseg.startswith("{") and tseg.endswith("}"):
                    params[tseg[1:-1]] = seg
                    score.append(1)
                elif tseg == seg:
                    score.append(0)
                else:
                    break
            else:
                key = tuple(score)
                if best is None or key < best[0]:
                    best = (key, template, params)
        return (best[1], best[2]) if best else None

    def operation(self, method: str, template: str) -> Operation | None:
        """Return the operation for a method and template."""
        item = self.document["paths"].get(template, {})
        op = item.get(method.lower())
        if op is None:
            return None
        params: dict[tuple[str, str], Mapping[str, Any]] = {}
        for param in [*item.get("parameters", []), *op.get("parameters", [])]:
            params[(param["in"], param["name"])] = param
        return Operation(method.upper(), template, op.get("operationId", ""), op, params)

    def methods(self, template: str) -> list[str]:
        """Return the methods the spec defines for a template."""
        return [m.upper() for m in HTTP_METHODS if m in self.document["paths"].get(template, {})]

    def _body_validator(self, op: Operation, content_type: str) -> Any:
        """Return the cached validator for an operation's request body media type."""
        key = (op.method, op.template, content_type)
        validator = self._validators.get(key)
        if validator is None:
            fragment = _pointer(
                "paths", op.template, op.method.lower(), "requestBody", "content", content_type, "schema"
            )
            schema = {"$ref": f"{SPEC_URI}#/{fragment}"}
            validator = DiscordValidator(schema, registry=self.registry)
            self._validators[key] = validator
        return validator

    def body_violations(self, op: Operation, content_type: str, body: Any) -> list[Violation]:
        """Validate a request body (the JSON, or multipart payload_json) against the operation's schema."""
        media = content_type if content_type in op.request_content_types else None
        if media is None:
            if not op.request_content_types:
                return []
            return [
                Violation(
                    "body",
                    (),
                    f"content type {content_type!r} not accepted by this operation",
                    "content-type",
                )
            ]
        validator = self._body_validator(op, media)
        found: list[Violation] = []
        seen: set[tuple[tuple[str | int, ...], str]] = set()
        for error in validator.iter_errors(body):
            chosen = error
            while chosen.context:
                chosen = best_match(chosen.context)
            path, message, keyword = _message_for(chosen)
            if (path, message) not in seen:
                seen.add((path, message))
                found.append(Violation("body", path, message, keyword))
        return found

    def _param_violation(
        self, location: str, name: str, raw: str, param: Mapping[str, Any]
    ) -> Violation | None:
        """Validate one path or query parameter given as a string."""
        schema = param.get("schema", {})
        if set(schema) == {"$ref"}:
            ref = schema["$ref"].rsplit("/", 1)[1]
            schema = self.document["components"]["schemas"].get(ref, {})
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        value: Any = raw
        if "boolean" in types:
            if raw not in TRUE_STRINGS | FALSE_STRINGS:
                return Violation(location, (name,), f"{raw!r} is not a boolean", "type")
            return None
        if "integer" in types and "string" not in types:
            try:
                value = int(raw)
            except ValueError:
                return Violation(location, (name,), f"{raw!r} is not an integer", "type")
        elif "number" in types and "string" not in types:
            try:
                value = float(raw)
            except ValueError:
                return Violation(location, (name,), f"{raw!r} is not a number", "type")
        if schema.get("pattern") and isinstance(value, str) and not re.search(schema["pattern"], value):
            return Violation(
                location,
                (name,),
                f"{raw!r} is not a snowflake"
                if schema.get("format") == "snowflake"
                else f"{raw!r} does not match {schema['pattern']!r}",
                "pattern",
            )
        if isinstance(value, (int, float)):
            if "minimum" in schema and value < schema["minimum"]:
                return Violation(location, (name,), f"{raw} is less than {schema['minimum']}", "minimum")
            if "maximum" in schema and value > schema["maximum"]:
                return Violation(location, (name,), f"{raw} is greater than {schema['maximum']}", "maximum")
        if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
            return Violation(
                location, (name,), f"length {len(value)} exceeds {schema['maxLength']}", "maxLength"
            )
        return None

    def parameter_violations(
        self, op: Operation, path_params: Mapping[str, str], query: Mapping[str, str]
    ) -> list[Violation]:
        """Validate path parameters and the query parameters the operation declares."""
        found: list[Violation] = []
        for (location, name), param in op.parameters.items():
            if location == "path" and name in path_params:
                v = self._param_violation("path", name, path_params[name], param)
            elif location == "query" and name in query:
                v = self._param_violation("query", name, query[name], param)
            elif location == "query" and param.get("required"):
                v = Violation("query", (name,), "this parameter is required", "required")
            else:
                v = None
            if v is not None:
                found.append(v)
        return found


@functools.lru_cache(maxsize=2)
def load_spec(path: str = str(SPEC_PATH)) -> OpenAPISpec:
    """Return the (process-wide cached) parsed spec."""
    log.debug("loading OpenAPI spec from %s", path)
    return OpenAPISpec(Path(path))


def discord_form_errors(violations: list[Violation]) -> dict[str, Any]:
    """Return Discord's 50035 Invalid Form Body response for these violations."""
    errors: dict[str, Any] = {}
    for violation in violations:
        node = errors
        for part in violation.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append(
            {"code": _DISCORD_CODES.get(violation.keyword, "BASE_TYPE_INVALID"), "message": violation.message}
        )
    return {"code": 50035, "errors": errors, "message": "Invalid Form Body"}
