"""Load scenario YAML into :class:`Scenario`, turning every problem into one located message.

PyYAML's node tree keeps the line of every key and value, so a pydantic error location such as
``('load', 'levels', 2)`` is walked back through the nodes to the line it came from.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import InputError, InputErrors
from harness.scenario.models import Scenario


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides typos) and reads
    ``1e12`` as a number, as YAML 1.2 and every user do (YAML 1.1 wants ``1.0e+12``)."""


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
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


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


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the model that holds the last part of ``loc`` (for "did you mean")."""
    tp: Any = Scenario
    for part in loc[:-1]:
        tp = _unwrap(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp, None)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any, part: object) -> Any:
    """Step from type ``tp`` through one part of a pydantic error location."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tagged = [m for m in models if part in {f.default for f in m.model_fields.values()}]
            if tagged:
                return tagged[0]
            if len(members) == 1 or models:
                tp = (models or members)[0]
            else:
                return None
        else:
            break
    if part is None:
        return tp
    if isinstance(part, int) or _is_type_tag(part):
        args = typing.get_args(tp)
        return args[0] if typing.get_origin(tp) in (list, tuple) and args else tp
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if part in tp.model_fields:
            return tp.model_fields[part].annotation
        return tp  # a discriminator tag: stay on this model
    return None


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        msg = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, _fields_at(tuple(err["loc"])), n=1, cutoff=0.6)
        return msg + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "(got " not in msg and isinstance(err.get("input"), (str, int, float, bool)):
        shown = json.dumps(err["input"], default=str)
        if len(shown) <= 60:
            msg += f" (got {shown})"
    return msg


def read_yaml(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for lines) and the data of a YAML input file (scenario, emulator profile);
    any YAML problem becomes one :class:`InputError` naming the file and line."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except InputError as e:
        raise InputError(e.message, file=file, line=e.line, field=e.field) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"invalid YAML: {problem}", file=file,
                         line=mark.line + 1 if mark else 1) from None
    except (ValueError, TypeError, RecursionError) as e:  # e.g. a date out of range, deep nesting
        raise InputError(f"invalid YAML: {type(e).__name__}: {e}", file=file, line=1) from None
    return root, data


def parse_scenario(text: str, file: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Parse YAML text; raise :class:`InputError` with file, line and field on any problem."""
    root, data = read_yaml(text, file)
    if data is None:
        raise InputError("the file is empty", file=file, line=1)
    if not isinstance(data, dict):
        raise InputError("a scenario must be a mapping of keys (name, target, workload, load, ...)",
                         file=file, line=1)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise InputErrors(_validation_problems(e, root, file)) from None
    problems = [InputError(message, file=file, line=_locate(root, loc)[0], field=_field_path(loc))
                for loc, message in _semantic_problems(scenario)]
    if problems:
        raise InputErrors(problems)
    return _check_files(scenario, root, file, base_dir)


MAX_SHOWN = 20  # problems shown per file; a list of 1,000 bad values is one mistake


def _validation_problems(e: ValidationError, root: yaml.Node, file: str) -> list[InputError]:
    """Every problem pydantic found, once each, in file order.

    A value that fails every branch of a union yields one error per branch; the deepest location
    explains it (``levels[1]`` rather than ``levels``), so an error whose place holds a deeper
    one is dropped, and of several at one place the first is kept. A missing key beside an
    unknown key that resembles it is the same typo: only the unknown key is reported.
    """
    located = [(_locate(root, tuple(err["loc"])), err) for err in e.errors()]
    locs = [loc for (_, loc), _ in located]
    unknown = {loc[:-1] + (str(loc[-1]),) for (_, loc), err in located
               if err["type"] == "extra_forbidden"}
    kept: list[tuple[int | None, tuple, dict]] = []
    seen: dict[tuple, dict] = {}
    for (line, loc), err in located:
        if any(len(o) > len(loc) and o[:len(loc)] == loc for o in locs):
            continue
        if loc in seen:  # another branch of a union: "a valid list or 'auto'"
            first = seen[loc]
            alt = err["msg"].removeprefix("Input should be ")
            if err["type"] != "missing" and alt not in first["msg"]:
                first["msg"] += f" or {alt}"
            continue
        if err["type"] == "missing" and any(
                u[:-1] == loc[:-1] and difflib.SequenceMatcher(None, u[-1], str(loc[-1])).ratio() >= 0.6
                for u in unknown):
            continue
        err = dict(err)
        seen[loc] = err
        kept.append((line, loc, err))
    kept.sort(key=lambda k: (k[0] or 0, k[2]["type"] != "extra_forbidden"))
    problems = [InputError(_message(err), file=file, line=line, field=_field_path(loc))
                for line, loc, err in kept[:MAX_SHOWN]]
    if len(kept) > MAX_SHOWN:
        problems.append(InputError(f"... and {len(kept) - MAX_SHOWN} more problems", file=file,
                                   line=kept[MAX_SHOWN][0]))
    return problems


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


def _existing_file(value: str, root: yaml.Node, file: str, base_dir: Path | None, where: tuple,
                   what: str) -> str:
    """The absolute path of a file the scenario names, read relative to the scenario; a missing
    one is bad input at the field that names it."""
    p = Path(value)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        line, _ = _locate(root, where)
        raise InputError(f"{what} file not found: {value}", file=file, line=line,
                         field=".".join(map(str, where)))
    return str(p.resolve())


def _check_files(scenario: Scenario, root: yaml.Node, file: str, base_dir: Path | None) -> Scenario:
    """Resolve file references relative to the scenario and fail early when they are missing."""
    ds = scenario.workload.dataset
    if ds is not None:
        new_ds = ds.model_copy(update={"path": _existing_file(
            ds.path, root, file, base_dir, ("workload", "dataset", "path"), "dataset")})
        if ds.tokenizer:
            new_ds = new_ds.model_copy(update={"tokenizer": _existing_file(
                ds.tokenizer, root, file, base_dir, ("workload", "dataset", "tokenizer"), "tokenizer")})
        from harness.workload.dataset import load_dataset

        load_dataset(new_ds, scenario.workload.seed)   # every record checked: FILE:LINE: FIELD
        scenario = scenario.model_copy(update={
            "workload": scenario.workload.model_copy(update={"dataset": new_ds})})
    tr = scenario.workload.trace
    if tr is not None:
        new_tr = tr.model_copy(update={"path": _existing_file(
            tr.path, root, file, base_dir, ("workload", "trace", "path"), "trace")})
        from harness.workload.trace import load_trace

        load_trace(new_tr)   # every record checked: FILE:LINE: FIELD
        scenario = scenario.model_copy(update={
            "workload": scenario.workload.model_copy(update={"trace": new_tr})})
    return _check_profile(scenario, root, file, base_dir)


def _check_profile(scenario: Scenario, root: yaml.Node, file: str, base_dir: Path | None) -> Scenario:
    """An emulator profile that does not exist is bad input, not a replica that fails to start:
    a built-in name must exist; a path is read relative to the scenario and checked."""
    launcher = scenario.target.launcher
    if launcher.kind != "emulator":
        return scenario
    from harness.emulator.profile import load_profile

    name = launcher.profile
    p = Path(name)
    is_path = p.suffix in (".yaml", ".yml") or "/" in name
    if is_path and not p.is_absolute() and base_dir is not None and (base_dir / p).is_file():
        name = str((base_dir / p).resolve())
    try:
        load_profile(name)
    except InputError as e:
        if e.file and e.file != name and Path(e.file).is_file():
            raise  # a problem inside the profile file: its own FILE:LINE
        line, _ = _locate(root, ("target", "launcher", "profile"))
        msg = e.message if not is_path else f"emulator profile not found or unreadable: {launcher.profile}"
        raise InputError(msg, file=file, line=line, field="target.launcher.profile") from None
    if name != launcher.profile:
        scenario = scenario.model_copy(update={"target": scenario.target.model_copy(update={
            "launcher": launcher.model_copy(update={"profile": name})})})
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError("scenario file not found", file=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a scenario file", file=str(path)) from None
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte {e.object[e.start]:#04x})", file=str(path),
                         line=line) from None
    except OSError as e:
        raise InputError(f"cannot read scenario: {e.strerror or type(e).__name__}",
                         file=str(path)) from None
    return parse_scenario(text, file=str(path), base_dir=p.parent)


def scenario_json_schema() -> dict:
    """JSON Schema for editors (yaml-language-server)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "slm-harness scenario"
    return schema
