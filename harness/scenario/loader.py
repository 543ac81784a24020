"""Load scenario YAML into :class:`Scenario`, turning every problem into one located message.

PyYAML's node tree keeps the line of every key and value, so a pydantic error location such as
``('load', 'levels', 2)`` is walked back through the nodes to the line it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import InputError
from harness.scenario.models import Scenario


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides typos)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise InputError(f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                             line=key_node.start_mark.line + 1, field=str(key))
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_TAGS = {"emulator", "endpoints", "processes", "compose", "fixed", "uniform", "normal", "lognormal"}


def _is_type_tag(part: object) -> bool:
    """pydantic puts union-branch names in ``loc`` (``list[...]``, ``literal['auto']``, ``float``)."""
    return isinstance(part, str) and (
        "[" in part or part.startswith("function-") or part in {
            "float", "int", "str", "list", "bool", "dict", "constrained-float", "constrained-int"})


def _locate(root: yaml.Node | None, loc: tuple) -> tuple[int | None, tuple]:
    """Line (1-based) of the node at ``loc`` and the loc with pydantic's union tags removed."""
    node = root
    line = root.start_mark.line + 1 if root is not None else None
    kept: list = []
    for part in loc:
        if _is_type_tag(part):
            continue
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                if part in _TAGS:
                    continue  # discriminated-union tag, not a key in the file
                kept.append(part)  # a missing key: the parent's line is the place
                node = None
                continue
            kept.append(part)
            line = match[0].start_mark.line + 1
            node = match[1]
            if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
                line = node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            kept.append(part)
            if 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                node = None
        else:
            if part in _TAGS and node is not None:
                continue
            kept.append(part)
    return line, tuple(kept)


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(err.get("input"), (str, int, float, bool)):
        shown = json.dumps(err["input"], default=str)
        if len(shown) <= 60:
            msg += f" (got {shown})"
    return msg


def parse_scenario(text: str, file: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Parse YAML text; raise :class:`InputError` with file, line and field on any problem."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except InputError as e:
        raise InputError(e.message, file=file, line=e.line, field=e.field) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"invalid YAML: {problem}", file=file,
                         line=mark.line + 1 if mark else None) from None
    if data is None:
        raise InputError("the file is empty", file=file, line=1)
    if not isinstance(data, dict):
        raise InputError("a scenario must be a mapping of keys (name, target, workload, load, ...)",
                         file=file, line=1)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        located = [(_locate(root, tuple(err["loc"])), err) for err in e.errors()]
        # A value that fails every branch of a union yields one error per branch; the deepest
        # location is the one that explains it (``levels[1]`` rather than ``levels``).
        located.sort(key=lambda item: -len(item[0][1]))
        (line, loc), err = located[0]
        others = {l for (_, l), _ in located[1:] if loc[:len(l)] != l}
        more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
        raise InputError(_message(err) + more, file=file, line=line, field=_field_path(loc)) from None
    for loc, message in _semantic_problems(scenario):
        line, _ = _locate(root, loc)
        raise InputError(message, file=file, line=line, field=_field_path(loc))
    return _check_files(scenario, root, file, base_dir)


def _semantic_problems(s: Scenario) -> list[tuple[tuple, str]]:
    """Rules that span fields, reported with the exact element at fault."""
    problems: list[tuple[tuple, str]] = []
    if s.load.mode == "concurrency" and isinstance(s.load.levels, list):
        for i, lv in enumerate(s.load.levels):
            if lv != int(lv):
                problems.append((("load", "levels", i), f"concurrency must be a whole number (got {lv})"))
    if s.workload.system_prompt is not None and s.target.protocol not in ("openai-chat", "auto"):
        problems.append((("workload", "system_prompt"), "only the openai-chat protocol has a system prompt"))
    if s.store.influxdb is not None:
        db = s.store.influxdb
        if db.api == "v2" and not (db.org and db.bucket):
            problems.append((("store", "influxdb", "bucket"), "the v2 API needs org and bucket"))
        if db.api == "v1" and not db.database:
            problems.append((("store", "influxdb", "database"), "the v1 API needs database"))
    return problems


def _check_files(scenario: Scenario, root: yaml.Node, file: str, base_dir: Path | None) -> Scenario:
    """Resolve file references relative to the scenario and fail early when they are missing."""
    ds = scenario.workload.dataset
    if ds is not None:
        p = Path(ds.path)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            line, _ = _locate(root, ("workload", "dataset", "path"))
            raise InputError(f"dataset file not found: {ds.path}", file=file, line=line,
                             field="workload.dataset.path")
        new_ds = ds.model_copy(update={"path": str(p.resolve())})
        scenario = scenario.model_copy(update={
            "workload": scenario.workload.model_copy(update={"dataset": new_ds})})
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError("scenario file not found", file=str(path)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read scenario: {e.__class__.__name__}", file=str(path)) from None
    return parse_scenario(text, file=str(path), base_dir=p.parent)


def scenario_json_schema() -> dict:
    """JSON Schema for editors (yaml-language-server)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "slm-harness scenario"
    return schema
