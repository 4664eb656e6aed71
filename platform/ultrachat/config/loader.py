"""Load a job config: YAML file + ``a.b=value`` overrides -> validated schema, every problem at once.

Errors name the file and line (or the override), the key path, what was expected and the fix;
unknown keys suggest the nearest valid key.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ultrachat.config.schema import JOB_SCHEMAS, JobSettings
from ultrachat.errors import ConfigError

Path_ = tuple[str | int, ...]
# Keys that hold credentials (api_key, hf_token, password...), but not e.g. max_tokens.
_SECRET_KEY = re.compile(r"(api_?key|secret|passw(or)?d|(^|_)token$)", re.IGNORECASE)


def load_config(job: str, config_file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSettings:
    """Read, override and validate ``config_file`` against ``job``'s schema; raise ConfigError."""
    if job not in JOB_SCHEMAS:
        raise ValueError(f"unknown job {job!r}; expected one of {sorted(JOB_SCHEMAS)}")
    source = str(config_file)
    data, lines = _read_yaml(Path(config_file))
    problems: list[str] = []
    override_origin: dict[Path_, str] = {}
    for text in overrides:
        try:
            key_path, value = parse_override(text)
            _set_path(data, key_path, value)
            # Never echo a secret passed on the command line into logs or the JSON summary.
            shown = f"{text.partition('=')[0]}=<hidden>" if _SECRET_KEY.search(str(key_path[-1])) else text
            override_origin[key_path] = shown
        except ValueError as err:
            problems.append(f"override {text!r}: {err}")
    schema = JOB_SCHEMAS[job]
    try:
        config = schema.model_validate(data)
    except ValidationError as err:
        described = [_describe(e, schema, data, lines, override_origin) for e in err.errors()]
        problems += sorted(described, key=_line_order)
        config = None
    if problems:
        raise ConfigError(f"{source} ({job} config)", problems)
    return config


def validate_section(schema: type[BaseModel], data: dict, source: str) -> BaseModel:
    """Validate a dict that came from somewhere other than a file (e.g. a Serve config's ``args``)."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, [_describe(e, schema, data, {}, {}) for e in err.errors()]) from None


def parse_override(text: str) -> tuple[Path_, Any]:
    """``a.b.0.c=value`` -> (("a", "b", 0, "c"), value parsed as a YAML scalar/list/map)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected the form key.path=value, e.g. output_dir=/tmp/run1")
    parts = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    if any(p == "" for p in parts):
        raise ValueError(f"empty segment in key path {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return parts, value


def dump_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ------------------------------------------------------------------------------------ reading


def _read_yaml(path: Path) -> tuple[dict, dict[Path_, int]]:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(str(path), [
            f"config file {what} (working directory {Path.cwd()}). Fix: pass --config with a YAML "
            f"file, e.g. configs/generate/local.yaml"
        ])
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(str(path), [f"{where}malformed YAML: {problem}. Fix the syntax there "
                                      f"(indentation, a missing ':' or an unclosed quote)"]) from None
    if data is None:
        data, root = {}, None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"the top level must be a mapping of keys (like output_dir: ...), "
                                      f"got a {type(data).__name__}"])
    lines: dict[Path_, int] = {}
    duplicates: list[str] = []
    _index_lines(root, (), lines, duplicates)
    if duplicates:
        raise ConfigError(str(path), duplicates)
    return data, lines


def _index_lines(node, path: Path_, lines: dict[Path_, int], duplicates: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key_path = path + (key_node.value,)
            if key_node.value in seen:
                duplicates.append(f"line {key_node.start_mark.line + 1}, key {_dotted(key_path)!r}: given "
                                  f"twice; YAML keeps only the last. Fix: delete one of them")
            seen.add(key_node.value)
            lines[key_path] = key_node.start_mark.line + 1
            _index_lines(value_node, key_path, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _index_lines(item, path + (index,), lines, duplicates)


def _set_path(data: dict, key_path: Path_, value: Any) -> None:
    node: Any = data
    for depth, part in enumerate(key_path[:-1]):
        if isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise ValueError(f"{_dotted(key_path[:depth])} has {len(node)} items; index {part} is out of range")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{_dotted(key_path[:depth])} is a {type(node).__name__}, not a mapping")
        node = node.setdefault(part, {})
    last = key_path[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"cannot set {_dotted(key_path)}: its parent is a {type(node).__name__}")


# ---------------------------------------------------------------------------------- reporting


def _describe(error: dict, schema: type[BaseModel], data: dict, lines: dict, overrides: dict) -> str:
    loc = tuple(error["loc"])
    key_path = _data_path(loc, data)
    where = _where(key_path, lines, overrides)
    kind = error["type"]
    if kind == "extra_forbidden":
        bad = key_path[-1]
        valid = _fields_at(schema, loc[:-1]) or []
        close = difflib.get_close_matches(str(bad), valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        secret = (" Secrets never go in config files: export it as an environment variable and name "
                  "that variable in the *_env key.") if _SECRET_KEY.search(str(bad)) else ""
        return f"{where}unknown key {_dotted(key_path)!r}: {hint}valid keys here: {', '.join(valid)}.{secret}"
    if kind == "missing":
        return f"{where}missing required key {_dotted(key_path)!r}. Fix: add it"
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        tag_path = key_path + (ctx["discriminator"].strip("'"),)
        return (f"{_where(tag_path, lines, overrides)}key {_dotted(tag_path)!r}: {ctx['tag']!r} is not a "
                f"valid choice; expected one of {ctx['expected_tags']}")
    if kind == "union_tag_not_found":
        tag = error.get("ctx", {}).get("discriminator", "").strip("'")
        return f"{where}key {_dotted(key_path)!r}: missing {tag!r}, which selects the kind of section"
    message = error["msg"].removeprefix("Value error, ")
    custom = kind == "value_error"  # our validators' messages already quote the value
    got = "" if custom or isinstance(error.get("input"), (dict, list)) else f" (got {error.get('input')!r})"
    return f"{where}key {_dotted(key_path)!r}: {message}{got}"


def _line_order(problem: str) -> int:
    match = re.match(r"line (\d+):", problem)
    return int(match.group(1)) if match else 10**9


def _where(key_path: Path_, lines: dict, overrides: dict) -> str:
    for override_path, text in overrides.items():
        shared = min(len(override_path), len(key_path))
        if shared and override_path[:shared] == key_path[:shared]:
            return f"override {text!r}: "
    for cut in range(len(key_path), 0, -1):
        prefix = key_path[:cut]
        if prefix in lines:
            return f"line {lines[prefix]}: "
    return ""


def _data_path(loc: tuple, data: Any) -> Path_:
    """The key path as the user wrote it: pydantic's loc minus union tags and validator names."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part == loc[-1]:
            node = None  # a missing or unknown key: still part of the path
        else:
            continue
        path.append(part)
    return tuple(path)


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str] | None:
    """The valid keys of the section at ``loc`` (pydantic's loc, union tags included)."""
    current: Any = schema
    i = 0
    while i <= len(loc):
        origin = get_origin(current)
        if origin is Annotated:
            current = get_args(current)[0]
        elif origin in (Union, types.UnionType):
            members = [m for m in get_args(current) if m is not type(None)]
            tag = loc[i] if i < len(loc) else None
            tagged = [m for m in members if _has_tag(m, tag)]
            if tagged:
                current, i = tagged[0], i + 1
            elif len(members) == 1:
                current = members[0]
            else:
                return None
        elif origin in (list, tuple, dict):
            current, i = get_args(current)[-1], i + 1
        elif isinstance(current, type) and issubclass(current, BaseModel):
            if i == len(loc):
                return list(current.model_fields)
            field = current.model_fields.get(loc[i])
            if field is None:
                return None
            current, i = field.annotation, i + 1
        else:
            return None
    return None


def _has_tag(member: Any, tag: Any) -> bool:
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    return any(get_origin(f.annotation) is Literal and tag in get_args(f.annotation)
               for f in member.model_fields.values())


def _dotted(key_path: Path_) -> str:
    return ".".join(str(p) for p in key_path) or "<top level>"
