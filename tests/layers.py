#!/usr/bin/env python3
"""layers.py: checks that app/ keeps its layers one way, from the sources and the objects.

    python3 tests/layers.py [BUILD_DIR]   (default build; run after `make`)

The layers, lowest first (README, "Layout"):

    base < core < fastcgi, backends < worker < master < main.c

A file may include, and call, only its own layer and the layers below it; fastcgi and
backends are side by side and use neither each other. Checked twice: from the
`#include "layer/name.h"` lines of app/ and include/, and from the objects, where every
symbol a file uses is resolved to the file that defines it (nm). The objects also show
loops: files that reach each other through calls or data (exchange -> routes ->
endpoints -> exchange would be one). Prints one line per violation and exits 1 if any.
Standard library only.
"""

import os
import re
import subprocess
import sys

RANK = {"base": 0, "core": 1, "fastcgi": 2, "backends": 2, "worker": 3, "master": 4, "main": 5}
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.M)


def layer_of(path):
    """The layer of a source path relative to the root: app/<layer>/..., include/<layer>/..."""
    parts = path.split(os.sep)
    if len(parts) == 2 and parts[0] == "app" and parts[1] in ("main.c", "main.o"):
        return "main"
    return parts[1] if len(parts) > 2 and parts[1] in RANK else None


def may_use(user, used):
    return used == user or RANK[used] < RANK[user]


def sources():
    for top in ("app", "include"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                if name.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(dirpath, name), ROOT)


def check_includes():
    problems = []
    for rel in sources():
        layer = layer_of(rel)
        if layer is None:
            problems.append(f"{rel}: not in a layer folder")
            continue
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = f.read()
        for used in INCLUDE_RE.findall(text):
            if used not in RANK:
                continue  # a generated or test header, not a layer
            if not may_use(layer, used):
                problems.append(f"{rel}: {layer} includes {used}/ (a layer it must not use)")
    return problems


def objects(build):
    app = os.path.join(ROOT, build, "app")
    for dirpath, _, names in os.walk(app):
        for name in sorted(names):
            if name.endswith(".o"):
                yield os.path.relpath(os.path.join(dirpath, name), os.path.join(ROOT, build))


def symbol_table(build, objs):
    """(defined: symbol -> object, used: object -> set of symbols) from nm."""
    out = subprocess.run(["nm", "-A", "--defined-only", "-g"] + [os.path.join(build, o) for o in objs],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    defined = {}
    for line in out.splitlines():
        path, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) == 3:
            defined[fields[2]] = os.path.relpath(path, build)
    out = subprocess.run(["nm", "-A", "--undefined-only"] + [os.path.join(build, o) for o in objs],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    used = {o: set() for o in objs}
    for line in out.splitlines():
        path, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            used[os.path.relpath(path, build)].add(fields[-1])
    return defined, used


def loops(edges):
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def check_objects(build):
    objs = list(objects(build))
    if not objs:
        return [f"no objects under {build}/app: run make first"]
    defined, used = symbol_table(build, objs)
    problems, edges = [], {}
    for obj in objs:
        layer = layer_of(obj)
        for sym in sorted(used[obj]):
            target = defined.get(sym)
            if not target or target == obj:
                continue
            edges.setdefault(obj, set()).add(target)
            tlayer = layer_of(target)
            if layer and tlayer and not may_use(layer, tlayer):
                problems.append(f"{obj}: {layer} uses {sym} of {target} ({tlayer})")
    for comp in loops(edges):
        problems.append("a loop: " + " -> ".join(comp))
    return problems


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    problems = check_includes() + check_objects(build)
    for p in problems:
        print(p)
    print(f"layers: {len(problems)} problem(s)" if problems else "layers: one way, no loops")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
