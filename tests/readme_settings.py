#!/usr/bin/env python3
"""The README's settings table, generated from `bin/perfcgi --help` (itself generated
from the one settings table in include/base/settings.h).

    python3 tests/readme_settings.py           # exit 1 and a diff if README.md is stale
    python3 tests/readme_settings.py --write   # rewrite the table in README.md
"""
import difflib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def table():
    help_text = subprocess.run([str(REPO / "bin" / "perfcgi"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    rows = ["| setting | flag | variable | default | meaning |", "|---|---|---|---|---|"]
    for line in help_text.split("Settings:\n", 1)[1].splitlines():
        m = re.match(r"\s+--(\S+)(?: (\S+))?\s+(PERFCGI_\S+)\s+(.*) \(default: (.*)\)$", line)
        if not m:
            raise SystemExit(f"readme_settings: cannot read this --help line: {line!r}")
        flag, meta, env, meaning, default = m.groups()
        key = flag.replace("-", "_")
        flag_text = f"--{flag} {meta}" if meta else f"--{flag}"
        cells = [f"`{key}`", f"`{flag_text}`", f"`{env}`", f"`{default}`", meaning]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def main(argv):
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks the {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    wanted = "\n" + table() + "\n"
    if current == wanted:
        print("ok   the README's settings table matches the binary")
        return 0
    if "--write" in argv:
        README.write_text(head + BEGIN + wanted + END + tail)
        print("README.md: settings table rewritten")
        return 0
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                               "README.md (settings)", "bin/perfcgi --help"))
    print("FAIL the README's settings table is stale: python3 tests/readme_settings.py --write")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
