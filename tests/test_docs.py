"""The documentation stays true: README.md and docs/**/*.md are checked against the real code.

- every ``slm-harness ...`` command in a fenced code block parses with the real argument parser
  (``harness.cli.build_parser()``), and every ``locust -f LOCUSTFILE ...`` command with Locust's
  own parser after the locustfile registered its options (in a subprocess: loading a locustfile
  applies gevent's monkey patching);
- every fenced ```yaml block that is a scenario (a ``name`` key, or only scenario sections)
  validates with the real loader;
- every relative link and image resolves, and so does its ``#anchor`` (GitHub's heading slugs);
- no work-diary wording (leases, lent machines, machine letters, work sessions, issue numbers,
  paths outside the repository) in README.md, docs/, scenarios/, or the comments and docstrings of
  harness/, benchmarks/, scripts/, locustfiles/ and tests/;
- README.md stays short.

Commands are read the way a shell reads them: ``\\`` continues a line, ``#`` starts a comment,
``|``, ``&&``, ``||``, ``;`` separate commands, and redirections (``> FILE``, ``2>&1``) are dropped. Placeholders in capitals (``RUN_DIR``,
``S.yaml``, ``URL``) are plain arguments to the parser, so they need no substitution; the only
substitution is ``PLACEHOLDERS`` below, for placeholders the shell cannot split (``<...>``).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 160

# <placeholder> -> a word the shell keeps whole (the parser only sees a string either way)
PLACEHOLDERS = {r"<[A-Za-z][A-Za-z0-9 _.-]*>": "PLACEHOLDER"}

SHELL_LANGS = {"sh", "bash", "shell", "console", ""}
def _scenario_sections() -> set[str]:
    from harness.scenario.models import Scenario

    return set(Scenario.model_fields)


SCENARIO_SECTIONS = _scenario_sections()

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<lang>[^\n`]*)$")


def _blocks(path: Path) -> list[tuple[str, int, str]]:
    """Fenced code blocks of a markdown file: (language, first line number, text)."""
    out, lang, start, buf, fence = [], None, 0, [], ""
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if lang is None:
            if m:
                lang, start, buf, fence = m["lang"].strip().split(" ")[0].lower(), i + 1, [], m["fence"]
        elif m and m["fence"].startswith(fence[0]) and len(m["fence"]) >= len(fence) and not m["lang"].strip():
            out.append((lang, start, "\n".join(buf)))
            lang = None
        else:
            buf.append(line)
    return out


def _prose(path: Path) -> str:
    """The file without its fenced code blocks and inline code spans (line count kept)."""
    lines, inside, fence = [], False, ""
    for line in path.read_text().splitlines():
        m = FENCE.match(line)
        if not inside and m:
            inside, fence = True, m["fence"]
            lines.append("")
        elif inside and m and m["fence"].startswith(fence[0]) and not m["lang"].strip():
            inside = False
            lines.append("")
        else:
            lines.append("" if inside else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(lines)


def _shell_commands(text: str) -> list[list[str]]:
    """Commands of a shell snippet, each as argv; prompts (``$ ``) dropped."""
    joined = re.sub(r"\\\n", " ", text)
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"^\s*\$ ", "", line)
        for pat, sub in PLACEHOLDERS.items():
            line = re.sub(pat, sub, line)
        line = re.sub(r"\s\d*>&\d+", " ", line)                      # 2>&1
        line = re.sub(r"\s\d*(?:>>?|<)\s*[^\s|;&]+", " ", line)       # > FILE, 2>/dev/null, < FILE
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars="|&;")
            lex.whitespace_split = True
            lex.commenters = "#"
            words = list(lex)
        except ValueError:   # an unbalanced quote: not a command line (e.g. a heredoc body)
            continue
        cmd: list[str] = []
        for w in words + [";"]:
            if w and set(w) <= set("|&;"):
                if cmd:
                    cmds.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return cmds


def _strip_env(argv: list[str]) -> list[str]:
    """Drop leading VAR=value assignments and a venv/bin prefix."""
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        argv = argv[1:]
    if argv:
        argv = [argv[0].rsplit("/", 1)[-1] if argv[0].endswith(("slm-harness", "locust")) else argv[0], *argv[1:]]
    return argv


def _commands(program: str) -> list[tuple[str, list[str]]]:
    found = []
    for md in DOCS:
        for lang, line, text in _blocks(md):
            if lang not in SHELL_LANGS:
                continue
            for argv in _shell_commands(text):
                argv = _strip_env(argv)
                if argv and argv[0] == program:
                    found.append((f"{md.relative_to(ROOT)}:{line}", argv))
    return found


SLM_COMMANDS = _commands("slm-harness")
LOCUST_COMMANDS = _commands("locust")


def test_the_docs_show_commands_at_all():
    assert len(SLM_COMMANDS) >= 10, SLM_COMMANDS
    assert any(cmd[1] == "sweep" for _, cmd in SLM_COMMANDS)


@pytest.mark.parametrize("where,argv", SLM_COMMANDS, ids=[f"{w} {' '.join(a)[:60]}" for w, a in SLM_COMMANDS])
def test_every_slm_harness_command_in_the_docs_parses(where, argv, capsys):
    from harness.cli import build_parser

    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as e:
        assert e.code == 0, f"{where}: `{' '.join(argv)}` does not parse: {capsys.readouterr().err}"


_LOCUST_CHECK = r"""
import json, sys
from locust.argument_parser import parse_options
from locust.main import load_locustfile
locustfile, commands = sys.argv[1], json.loads(sys.argv[2])
load_locustfile(locustfile)
bad = []
for argv in commands:
    try:
        parse_options(args=argv[1:])
    except SystemExit as e:
        if e.code:
            bad.append(argv)
print(json.dumps(bad))
"""


def test_every_locust_command_in_the_docs_parses_with_the_locustfiles_options():
    assert LOCUST_COMMANDS, "the docs show no locust command"
    by_file: dict[str, list[list[str]]] = {}
    for where, argv in LOCUST_COMMANDS:
        assert "-f" in argv, f"{where}: {' '.join(argv)} names no locustfile"
        by_file.setdefault(argv[argv.index("-f") + 1], []).append(argv)
    for locustfile, commands in by_file.items():
        assert (ROOT / locustfile).is_file(), f"{locustfile} does not exist"
        r = subprocess.run([sys.executable, "-c", _LOCUST_CHECK, locustfile, json.dumps(commands)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        bad = json.loads(r.stdout.strip().splitlines()[-1])
        assert not bad, f"locust commands that do not parse: {bad}\n{r.stderr[-2000:]}"


def _scenario_snippets() -> list[tuple[str, str]]:
    found = []
    for md in DOCS:
        for lang, line, text in _blocks(md):
            if lang not in ("yaml", "yml"):
                continue
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                data = None
            if not isinstance(data, dict) or not data:
                continue
            if "name" in data and set(data) <= SCENARIO_SECTIONS:
                found.append((f"{md.relative_to(ROOT)}:{line}", text))
            elif set(data) <= SCENARIO_SECTIONS - {"name", "description"}:
                found.append((f"{md.relative_to(ROOT)}:{line}", "name: doc-snippet\n" + text))
    return found


SCENARIOS = _scenario_snippets()


def test_the_docs_show_scenarios_at_all():
    assert len(SCENARIOS) >= 3, SCENARIOS


@pytest.mark.parametrize("where,text", SCENARIOS, ids=[w for w, _ in SCENARIOS])
def test_every_scenario_snippet_in_the_docs_validates(where, text, tmp_path):
    from harness.scenario.loader import parse_scenario

    data = yaml.safe_load(text)
    ds = ((data.get("workload") or {}).get("dataset") or (data.get("workload") or {}).get("trace") or {}).get("path")
    base = tmp_path
    if ds and (ROOT / "scenarios" / ds).is_file():   # a sample file under scenarios/: read the real one
        base = ROOT / "scenarios"
    elif ds and not Path(ds).is_absolute():      # a dataset the snippet names: give it a file
        (tmp_path / ds).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ds).write_text('{"prompt": "hello"}\n')
    parse_scenario(text, file=where, base_dir=base)    # raises InputError naming the line


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|(?<=\w)_", lambda m: "_" if m.group(0) == "_" else "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_keep_code_spans(md).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def _prose_keep_code_spans(md: Path) -> str:
    lines, inside, fence = [], False, ""
    for line in md.read_text().splitlines():
        m = FENCE.match(line)
        if not inside and m:
            inside, fence = True, m["fence"]
        elif inside and m and m["fence"].startswith(fence[0]) and not m["lang"].strip():
            inside = False
        elif not inside:
            lines.append(line)
    return "\n".join(lines)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _links() -> list[tuple[str, Path, str]]:
    found = []
    for md in DOCS:
        for n, line in enumerate(_prose_keep_code_spans(md).splitlines(), 1):
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):     # http:, https:, mailto:
                    continue
                found.append((f"{md.relative_to(ROOT)}", md, target))
    return found


def test_every_relative_link_and_anchor_resolves():
    links = _links()
    assert len(links) >= 20
    broken = []
    for where, md, target in links:
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            broken.append(f"{where}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{where}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


# Work-diary wording. Each pattern names what it catches. "session" alone is a word of the code
# (the run engine's session, a workload's multi-turn sessions, HTTP and WebDriver sessions), so
# only a work session is caught: one placed in time ("this session", "the fifth session",
# "earlier sessions", "the last three sessions").
DIARY = {
    "lease": re.compile(r"\bleas(e|es|ed)\b", re.I),
    "lent machine": re.compile(r"\blent\b", re.I),
    "machine letter": re.compile(r"\bmachines? [A-Z]{1,2}(?:'|-[A-Z]{1,2})?(?![\w.])"),
    "issue number": re.compile(r"\bissues? #?\d+|\(#\d+\)", re.I),
    "path outside the repository": re.compile(r"\.\./shared|/work/|shared/README|shared notes", re.I),
    "session": re.compile(r"\b(?:this|last|previous|earlier|second|third|fourth|fifth|sixth|seventh|"
                          r"eighth|two|three|four)\s+sessions?\b", re.I),
    "diary": re.compile(r"\bdevice tool\b|\blab notebook\b|\bcoordinator\b|\bthis morning\b", re.I),
}


def _py_comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    out = []
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.COMMENT:
                out.append((tok.start[0], tok.string))
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                out.append((node.body[0].lineno, doc))
    return out


def _diary_texts() -> list[tuple[str, str]]:
    texts = [(str(md.relative_to(ROOT)), _prose(md)) for md in DOCS]
    # code blocks of the docs too
    texts += [(f"{md.relative_to(ROOT)} (code)", "\n".join(t for _, _, t in _blocks(md))) for md in DOCS]
    code_dirs = [ROOT / d for d in ("harness", "benchmarks", "scripts", "locustfiles", "tests")]
    for py in sorted(p for d in code_dirs for p in d.rglob("*.py")):
        if py == Path(__file__).resolve():       # this file names the patterns it looks for
            continue
        for line, text in _py_comments_and_docstrings(py):
            texts.append((f"{py.relative_to(ROOT)}:{line}", text))
    others = [p for d in code_dirs for ext in ("*.c", "*.yaml", "*.sh") for p in d.rglob(ext)]
    others += sorted((ROOT / "scenarios").glob("*.yaml"))
    for other in sorted(others):
        texts.append((str(other.relative_to(ROOT)), other.read_text()))
    return texts


def test_no_work_diary_wording_in_the_docs_or_in_comments():
    hits = []
    for where, text in _diary_texts():
        for what, pat in DIARY.items():
            for m in pat.finditer(text):
                line = text[: m.start()].count("\n")
                hits.append(f"{where} (+{line}): {what}: ...{text[max(0, m.start() - 40): m.end() + 40]!r}")
    assert not hits, "\n".join(hits)


def test_the_diary_patterns_catch_what_they_name():
    samples = {"lease": "on that lease", "lent machine": "the lent H100", "machine letter": "machines Q-V",
               "issue number": "targets of issue 12", "path outside the repository": "see ../shared/x",
               "session": "this session's runs", "diary": "the device tool brought them back"}
    for what, text in samples.items():
        assert DIARY[what].search(text), what
    for fine in ("release the replicas", "an excellent machine. A run", "the machine's cc", "#1 GPU",
                 "a run's session: the run directory", "the WebDriver session is deleted",
                 "turns of the same session", "the first session starts at once"):
        assert not any(p.search(fine) for p in DIARY.values()), fine


def test_readme_fits_on_a_few_screens():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"
