#!/usr/bin/env python3
"""Finds import circles between the modules of each crate of the workspace.

A module is a file (`foo.rs`, `foo/mod.rs`) or an inline `mod foo { ... }`,
named by its path from the crate root (`api::sessions`). Module `a` depends
on module `b` when code in `a` names `b` or an item of `b`: a `use` (`pub
use` included), or a path anywhere in the code that starts with `crate::`,
`self::`, `super::`, a child module's name or a module imported by `use`.
A path names the longest module it starts with (`crate::api::ApiError` is
a dependency on `api`, even if `api` re-exports `ApiError` from a part of
its own). A module and its own submodules are not dependencies of each
other (a `mod x;` declaration, a facade re-exporting its parts, a part using
what its parent shares) unless `--strict` is given. Test code (a
`#[cfg(test)]` item and everything after a `#[cfg(test)]` line at a file's
top level) is left out, and so are comments and string literals.

Prints every circle (a strongly connected component of more than one module)
with the lines that make it, and exits 1 if there is one; otherwise one line
per crate: `crate: N modules, M edges, no circles`.

Usage: python3 scripts/import-graph.py [--crate NAME]... [--strict]
(NAME is a package name such as `runner-protocol`, or its folder, `protocol`.)
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORD_ROOTS = {"crate", "self", "super"}


# ---------------------------------------------------------------------------
# Source text: comments and literals blanked, line numbers kept.


def strip_code(text: str) -> str:
    """`text` with comments, string and char literals replaced by spaces
    (newlines kept, so offsets and line numbers stay the same)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(start: int, end: int) -> None:
        for k in range(start, min(end, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c == "r" and re.match(r'r#*"', text[i : i + 260]) and not _ident_before(text, i):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            start = i + 2 + len(hashes)
            end = text.find('"' + hashes, start)
            end = n if end < 0 else end + 1 + len(hashes)
            blank(i, end)
            i = end
        elif c == "b" and text.startswith('b"', i) and not _ident_before(text, i):
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), or a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'", text[i : i + 16])
            if m:
                blank(i, i + m.end())
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def _ident_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def without_tests(code: str) -> str:
    """`code` with test code blanked: everything from the first top-level
    `#[cfg(test)]` line on, and any other `#[cfg(test)]` item."""
    top = re.search(r"^#\[cfg\(test\)\]", code, re.M)
    if top:
        code = code[: top.start()] + re.sub(r"[^\n]", " ", code[top.start() :])
    for m in reversed(list(re.finditer(r"#\[cfg\(test\)\]", code))):
        end = item_end(code, m.end())
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start() : end]) + code[end:]
    return code


def item_end(code: str, i: int) -> int:
    """The end of the item starting at `i`: its `;` or its closing brace."""
    depth = 0
    while i < len(code):
        c = code[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return i


def matching_brace(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(code)


# ---------------------------------------------------------------------------
# The module tree.


@dataclass
class Module:
    path: tuple[str, ...]
    file: Path
    # The module's own code, as (start, end) ranges of the file's code.
    code: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Names brought in by `use`: name -> the absolute path it stands for.
    imports: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "::".join(self.path) if self.path else "crate"


MOD_DECL = re.compile(rf"(?<![A-Za-z0-9_])mod\s+({IDENT})\s*([;{{])")
VISIBILITY = re.compile(r"pub(?:\s*\([^)]*\))?\s*$")


def is_item_start(code: str, at: int) -> bool:
    """Whether `mod` at `at` starts an item: after `;`, a brace, an
    attribute or nothing, with an optional `pub(...)`."""
    i = skip_space_back(code, at)
    visibility = VISIBILITY.search(code, max(0, i - 40), i)
    if visibility:
        i = skip_space_back(code, visibility.start())
    return i == 0 or code[i - 1] in ";{}]"


def skip_space_back(code: str, i: int) -> int:
    while i > 0 and code[i - 1].isspace():
        i -= 1
    return i


class Crate:
    def __init__(self, name: str, folder: Path):
        self.name = name
        self.folder = folder
        self.modules: dict[tuple[str, ...], Module] = {}
        src = folder / "src"
        roots = []
        if (src / "lib.rs").exists():
            roots.append(((), src / "lib.rs"))
            if (src / "main.rs").exists():
                roots.append((("[bin main]",), src / "main.rs"))
        elif (src / "main.rs").exists():
            roots.append(((), src / "main.rs"))
        for binary in sorted((src / "bin").glob("*.rs")) if (src / "bin").is_dir() else []:
            roots.append(((f"[bin {binary.stem}]",), binary))
        self.bin_roots = {path[0] for path, _ in roots if path}
        for path, file in roots:
            self.load_file(path, file, child_dir=file.parent)

    def load_file(self, path: tuple[str, ...], file: Path, child_dir: Path) -> None:
        code = without_tests(strip_code(file.read_text(encoding="utf-8")))
        self.load_code(path, file, code, 0, len(code), child_dir)

    def load_code(
        self, path: tuple[str, ...], file: Path, code: str, start: int, end: int, child_dir: Path
    ) -> None:
        module = Module(path, file, code)
        self.modules[path] = module
        cursor = start
        own: list[tuple[int, int]] = []
        pos = start
        while True:
            m = MOD_DECL.search(code, pos, end)
            if not m:
                break
            if not is_item_start(code, m.start()):
                pos = m.end()
                continue
            child = m.group(1)
            child_path = path + (child,)
            module.children[child] = child_path
            if m.group(2) == ";":
                for candidate in (child_dir / f"{child}.rs", child_dir / child / "mod.rs"):
                    if candidate.exists():
                        grandchildren = (
                            candidate.parent
                            if candidate.name == "mod.rs"
                            else candidate.parent / child
                        )
                        self.load_file(child_path, candidate, grandchildren)
                        break
                pos = m.end()
            else:
                open_at = m.end() - 1
                close = matching_brace(code, open_at)
                own.append((cursor, m.start()))
                self.load_code(child_path, file, code, open_at + 1, close, child_dir / child)
                cursor = pos = close + 1
        own.append((cursor, end))
        module.spans = own

    # -- paths ---------------------------------------------------------------

    def root_of(self, path: tuple[str, ...]) -> tuple[str, ...]:
        return path[:1] if path[:1] and path[0] in self.bin_roots else ()

    def absolute(self, module: Module, segments: list[str]) -> tuple[str, ...] | None:
        """The absolute path `segments` names from `module`, or `None` for
        a path outside the crate."""
        if not segments:
            return None
        here = module.path
        first = segments[0]
        if first == "crate":
            return self.root_of(here) + tuple(segments[1:])
        if first in ("self", "super"):
            base = list(here)
            rest = list(segments)
            if rest[0] == "self":
                rest.pop(0)
            while rest and rest[0] == "super":
                if len(base) <= len(self.root_of(here)):
                    return None
                base.pop()
                rest.pop(0)
            return tuple(base) + tuple(rest)
        if first in module.children:
            return here + tuple(segments)
        if first in module.imports:
            return module.imports[first] + tuple(segments[1:])
        return None

    def target(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """The module `path` names, or whose item it names: its longest
        prefix that is a module. A name the module re-exports counts as
        the module's own: whoever writes `crate::api::ApiError` depends on
        `api`, wherever `api` took it from."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.modules:
                return path[:cut]
        return self.root_of(path)


# ---------------------------------------------------------------------------
# `use` trees and paths in code.

USE = re.compile(r"(?<![A-Za-z0-9_])use\s+([^;]*);")


def use_leaves(tree: str) -> list[tuple[list[str], str | None]]:
    """The leaves of a `use` tree: (segments, alias)."""
    tree = re.sub(r"\s+", " ", tree)
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", tree).strip()
    out: list[tuple[list[str], str | None]] = []

    def walk(prefix: list[str], text: str) -> None:
        for part in split_top(text):
            part = part.strip()
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0:
                head = [s for s in part[:brace].split("::") if s]
                walk(prefix + head, part[brace + 1 : part.rfind("}")])
                continue
            alias = None
            m = re.fullmatch(rf"(.+?) as ({IDENT})", part)
            if m:
                part, alias = m.group(1), m.group(2)
            segments = [s for s in part.split("::") if s]
            if segments == ["self"]:
                out.append((prefix, alias))
            else:
                out.append((prefix + segments, alias))

    walk([], tree)
    return out


def split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


PATH = re.compile(rf"(?<![A-Za-z0-9_:$])({IDENT}(?:\s*::\s*{IDENT})+)")


@dataclass
class Edge:
    lines: list[str] = field(default_factory=list)


def line_of(code: str, offset: int) -> int:
    return code.count("\n", 0, offset) + 1


def is_within(inner: tuple[str, ...], outer: tuple[str, ...]) -> bool:
    return inner[: len(outer)] == outer


def build_edges(crate: Crate, strict: bool) -> dict[tuple[tuple[str, ...], tuple[str, ...]], Edge]:
    uses: dict[tuple[str, ...], list[tuple[int, list[str], str | None]]] = {}
    # Pass 1: every module's imports (a name may be used before its `use`).
    for module in crate.modules.values():
        found = []
        for start, end in module.spans:
            for m in USE.finditer(module.code, start, end):
                for segments, alias in use_leaves(m.group(1)):
                    found.append((m.start(), segments, alias))
        uses[module.path] = found
    for _ in range(3):
        # Imports of imports (`use crate::api; use api::X;`) settle in a few rounds.
        for module in crate.modules.values():
            for _, segments, alias in uses[module.path]:
                if not segments or segments[-1] == "*":
                    continue
                absolute = crate.absolute(module, segments)
                name = alias or segments[-1]
                if absolute is not None and name not in ("self", "super", "crate", "_"):
                    module.imports.setdefault(name, absolute)

    edges: dict[tuple[tuple[str, ...], tuple[str, ...]], Edge] = {}
    texts: dict[Path, list[str]] = {}

    def add(module: Module, absolute: tuple[str, ...] | None, offset: int) -> None:
        if absolute is None:
            return
        target = crate.target(absolute)
        if target == module.path:
            return
        if not strict and (is_within(target, module.path) or is_within(module.path, target)):
            # A module and its own submodules: a facade re-exporting its
            # parts, a part using what its parent shares.
            return
        lines = texts.setdefault(module.file, module.file.read_text(encoding="utf-8").splitlines())
        number = line_of(module.code, offset)
        where = f"{module.file.relative_to(ROOT)}:{number}: {lines[number - 1].strip()}"
        edge = edges.setdefault((module.path, target), Edge())
        if where not in edge.lines:
            edge.lines.append(where)

    for module in crate.modules.values():
        for offset, segments, _ in uses[module.path]:
            if segments and segments[-1] == "*":
                segments = segments[:-1]
            add(module, crate.absolute(module, segments), offset)
        # A `use` statement's paths were taken above.
        body = USE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), module.code)
        for start, end in module.spans:
            for m in PATH.finditer(body, start, end):
                segments = [s.strip() for s in m.group(1).split("::")]
                if segments[0] in KEYWORD_ROOTS or segments[0] in module.children or (
                    segments[0] in module.imports and (module.imports[segments[0]] in crate.modules)
                ):
                    add(module, crate.absolute(module, segments), m.start())
    return edges


# ---------------------------------------------------------------------------
# Strongly connected components (Tarjan).


def tarjan(nodes, successors) -> list[list]:
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    components: list[list] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(successors(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors(child))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


# ---------------------------------------------------------------------------


def workspace_crates() -> list[tuple[str, Path]]:
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    crates = []
    for member in manifest["workspace"]["members"]:
        folder = ROOT / member
        package = tomllib.loads((folder / "Cargo.toml").read_text(encoding="utf-8"))
        crates.append((package["package"]["name"], folder))
    return crates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--crate",
        action="append",
        dest="crates",
        metavar="NAME",
        help="only this crate (package name or folder); may be repeated",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count a module's use of its own submodules and ancestors too",
    )
    args = parser.parse_args()
    crates = workspace_crates()
    if args.crates:
        known = {name for name, _ in crates} | {folder.name for _, folder in crates}
        unknown = [c for c in args.crates if c not in known]
        if unknown:
            print(f"import-graph: no crate {', '.join(unknown)} in the workspace", file=sys.stderr)
            return 2
        crates = [(n, f) for n, f in crates if n in args.crates or f.name in args.crates]

    circles = 0
    for name, folder in crates:
        crate = Crate(name, folder)
        edges = build_edges(crate, args.strict)
        successors: dict = {path: [] for path in crate.modules}
        for source, target in sorted(edges):
            successors[source].append(target)
        components = [
            sorted(c) for c in tarjan(sorted(crate.modules), lambda n: successors[n]) if len(c) > 1
        ]
        if not components:
            print(f"{name}: {len(crate.modules)} modules, {len(edges)} edges, no circles")
            continue
        for component in sorted(components):
            circles += 1
            members = set(component)
            names = ", ".join(crate.modules[p].name for p in component)
            print(f"{name}: circle of {len(component)} modules: {names}")
            for (source, target), edge in sorted(edges.items()):
                if source in members and target in members:
                    print(f"  {crate.modules[source].name} -> {crate.modules[target].name}")
                    for where in edge.lines:
                        print(f"    {where}")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
