"""Check that the reference pages match the code and that their examples run.

``docs/api.md``
    * every name in ``napari_cellama.core.__all__`` and ``napari_cellama.io.__all__`` has a
      heading ``### `core.NAME``` / ``### `io.NAME``` and no heading names something that
      is not public;
    * the first ```` ```text ```` block after a heading is the object's signature, as
      rendered here from :func:`inspect.signature`;
    * every ```` ```python ```` block runs (each in a fresh namespace, from the repository
      root, so that ``../shared/data`` resolves).

``docs/cli.md``
    * the ```` ```bash ```` blocks preceded by ``<!-- check-cli-setup -->`` run first, in a
      scratch folder (they write the example files);
    * every ```` ```console ```` block preceded by ``<!-- check-cli -->`` is replayed: each
      ``$ command`` line runs with bash in that folder, with ``$XENIUM`` set to the
      4,595-cell Xenium crop in ``../shared/data``; its combined stdout and stderr must equal
      the lines that follow it (``$ echo $?`` prints the previous exit status);
    * every subcommand of ``napari-cellama`` has a ``## `napari-cellama NAME``` section.

Run from anywhere::

    python docs/check_docs.py              # everything (~1-2 minutes: examples embed a few sentences)
    python docs/check_docs.py --no-run     # headings, signatures and CLI sections only

Exit status 0 when everything matches, 1 otherwise (each problem is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
MODULES = ("core", "io")
XENIUM_CROP = ROOT.parent / "shared" / "data" / "xenium_bone_marrow_crop"
if not XENIUM_CROP.exists():
    XENIUM_CROP = Path("/work/shared/data/xenium_bone_marrow_crop")


# --------------------------------------------------------------------------- signatures
def _default(param: inspect.Parameter, owner) -> str:
    if dataclasses.is_dataclass(owner):
        for f in dataclasses.fields(owner):
            if f.name == param.name and f.default_factory is not dataclasses.MISSING:
                name = getattr(f.default_factory, "__name__", "factory")
                return f"{name}()" if name != "<lambda>" else "<factory>"
    return repr(param.default)


def render_signature(name: str, obj) -> str:
    """``name(params) -> return`` with string annotations unquoted; classes: their constructor."""
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        bases = ", ".join(b.__name__ for b in obj.__bases__)
        return f"class {name}({bases})"
    if not callable(obj) or getattr(obj, "__module__", "") == "typing" or isinstance(obj, types.GenericAlias):
        return f"{name} = {obj!r}".replace("typing.", "")
    sig = inspect.signature(obj)
    parts = []
    seen_kwonly = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly:
            parts.append("*")
            seen_kwonly = True
        if p.kind is p.VAR_POSITIONAL:
            seen_kwonly = True
            text = f"*{p.name}"
        elif p.kind is p.VAR_KEYWORD:
            text = f"**{p.name}"
        else:
            text = p.name
        if p.annotation is not p.empty:
            ann = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
            text += f": {ann}"
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + _default(p, obj)
        parts.append(text)
    out = f"{name}({', '.join(parts)})"
    if not inspect.isclass(obj) and sig.return_annotation is not sig.empty:
        ret = sig.return_annotation
        out += f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return out


# --------------------------------------------------------------------------- markdown
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str):
    """Yield ``(kind, body, line_no, preceding_line)`` for every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            kind, start = m.group(1), i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            yield kind, "\n".join(body), start + 1, prev
        i += 1


HEADING = re.compile(r"^### `(core|io)\.([A-Za-z_][A-Za-z0-9_]*)`\s*$")


def api_sections(text: str) -> dict[tuple[str, str], str]:
    """``(module, name) -> section text`` for every ``### `module.name``` heading."""
    out: dict[tuple[str, str], str] = {}
    current, buf = None, []
    for line in text.splitlines():
        m = HEADING.match(line)
        if m or line.startswith(("## ", "### ")):
            if current is not None:
                out[current] = "\n".join(buf)
            current, buf = ((m.group(1), m.group(2)) if m else None), []
            continue
        buf.append(line)
    if current is not None:
        out[current] = "\n".join(buf)
    return out


def check_api(run_examples: bool) -> list[str]:
    problems: list[str] = []
    text = (DOCS / "api.md").read_text()
    sections = api_sections(text)
    for mod in MODULES:
        module = importlib.import_module(f"napari_cellama.{mod}")
        public = set(module.__all__)
        documented = {name for (m, name) in sections if m == mod}
        for name in sorted(public - documented):
            problems.append(f"api.md: napari_cellama.{mod}.{name} is public but has no '### `{mod}.{name}`' section")
        for name in sorted(documented - public):
            problems.append(f"api.md: section '{mod}.{name}' documents a name that is not in napari_cellama.{mod}.__all__")
        for name in sorted(public & documented):
            body = sections[(mod, name)]
            sig_blocks = [b for k, b, _, _ in blocks(body) if k == "text"]
            expected = render_signature(name, getattr(module, name))
            if not sig_blocks:
                problems.append(f"api.md: {mod}.{name} has no ```text signature block; expected:\n    {expected}")
            elif " ".join(sig_blocks[0].split()) != " ".join(expected.split()):
                problems.append(f"api.md: {mod}.{name} signature differs from the code:\n"
                                f"    doc:  {' '.join(sig_blocks[0].split())}\n    code: {expected}")
            if not any(k == "python" for k, _, _, _ in blocks(body)):
                problems.append(f"api.md: {mod}.{name} has no ```python example")
    if run_examples:
        problems += run_python_blocks(DOCS / "api.md")
    return problems


def run_python_blocks(path: Path) -> list[str]:
    problems = []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for kind, body, line, _ in blocks(path.read_text()):
            if kind != "python":
                continue
            t0 = time.perf_counter()
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                    exec(compile(body, f"{path.name}:{line}", "exec"), {"__name__": "__docs__"})  # noqa: S102 - running the examples is the point
                status = "ok"
            except Exception:  # noqa: BLE001 - every failing example is reported
                status = "FAILED"
                problems.append(f"{path.name}:{line}: example failed:\n{traceback.format_exc(limit=4)}")
            print(f"  {path.name}:{line}: {status} ({time.perf_counter() - t0:.1f} s)")
    finally:
        os.chdir(cwd)
    return problems


# --------------------------------------------------------------------------- CLI
def replay(body: str, folder: Path, env: dict) -> list[str]:
    """Run the ``$`` lines of a console block; return a list of differences."""
    problems = []
    cmds: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            cmds.append((line[2:], []))
        elif cmds:
            cmds[-1][1].append(line)
    rc = 0
    for cmd, expected in cmds:
        if cmd.strip() == "echo $?":
            got = [str(rc)]
        else:
            proc = subprocess.run(["bash", "-c", cmd], check=False, cwd=folder, env=env, capture_output=True, text=True)
            rc = proc.returncode
            got = (proc.stdout + proc.stderr).rstrip("\n").splitlines()
        exp = [e.rstrip() for e in expected]
        got = [g.rstrip() for g in got]
        while exp and not exp[-1]:
            exp.pop()
        if got != exp:
            problems.append(f"cli.md: `{cmd}` printed\n    " + "\n    ".join(got) + "\n  expected\n    " + "\n    ".join(exp))
    return problems


def check_cli(run_examples: bool) -> list[str]:
    problems = []
    text = (DOCS / "cli.md").read_text()
    from napari_cellama.cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        if f"## `napari-cellama {name}`" not in text:
            problems.append(f"cli.md: subcommand {name!r} has no '## `napari-cellama {name}`' section")
    if not run_examples:
        return problems
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = dict(os.environ, XENIUM=str(XENIUM_CROP), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        for kind, body, line, prev in blocks(text):
            if kind == "bash" and prev.strip() == "<!-- check-cli-setup -->":
                proc = subprocess.run(["bash", "-e", "-c", body], check=False, cwd=folder, env=env, capture_output=True, text=True)
                if proc.returncode:
                    return problems + [f"cli.md:{line}: setup block failed:\n{proc.stderr[-2000:]}"]
                print(f"  cli.md:{line}: setup ok")
        for kind, body, line, prev in blocks(text):
            if kind == "console" and prev.strip() == "<!-- check-cli -->":
                t0 = time.perf_counter()
                found = replay(body, folder, env)
                problems += [f"(cli.md:{line}) {p}" for p in found]
                print(f"  cli.md:{line}: {'ok' if not found else 'FAILED'} ({time.perf_counter() - t0:.1f} s)")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="check docs/api.md and docs/cli.md against the code")
    parser.add_argument("--no-run", action="store_true", help="do not run the examples")
    parser.add_argument("--only", choices=("api", "cli"), help="check one page")
    args = parser.parse_args(argv)
    problems = []
    if args.only in (None, "api"):
        print("docs/api.md")
        problems += check_api(not args.no_run)
    if args.only in (None, "cli"):
        print("docs/cli.md")
        problems += check_cli(not args.no_run)
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
