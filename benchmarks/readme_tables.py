"""Splice the benchmark tables into README.md, or check that they are there (``--check``).

Every block of README.md between

    <!-- edgeguard:begin NAME -->
    <!-- edgeguard:end NAME -->

is replaced by benchmarks/results/NAME_readme.md (the short fragment each benchmark
writes next to its .md/.json results), so README figures are generated, never copied by hand.

    python benchmarks/readme_tables.py            # rewrite README.md in place
    python benchmarks/readme_tables.py --check    # exit 1 (and a diff on stderr) when it is out of date

Exit codes: 0 up to date (or rewritten), 1 out of date (--check), 2 an error (a marker
without its pair, a missing fragment). Needs the standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- edgeguard:begin {name} -->"
END = "<!-- edgeguard:end {name} -->"
_MARKER = re.compile(r"<!-- edgeguard:(begin|end) ([A-Za-z0-9_.-]+) -->")
_NOTE = "<!-- generated from benchmarks/results/{name}_readme.md by benchmarks/readme_tables.py: edit that file -->"


class ReadmeError(ValueError):
    """The README's markers are broken or a fragment is missing."""


def block_names(text: str) -> list[str]:
    """The NAMEs of the README's begin markers, in order."""
    return [m.group(2) for m in _MARKER.finditer(text) if m.group(1) == "begin"]


def render(text: str, results: Path) -> str:
    """``text`` with every marked block replaced by its fragment from ``results``."""
    markers = list(_MARKER.finditer(text))
    out: list[str] = []
    position = 0
    seen: set[str] = set()
    index = 0
    while index < len(markers):
        begin = markers[index]
        kind, name = begin.group(1), begin.group(2)
        if kind != "begin":
            raise ReadmeError(f"expected '{BEGIN.format(name=name)}' before '{begin.group(0)}', got none")
        if name in seen:
            raise ReadmeError(f"expected each block once, got a second '{begin.group(0)}'")
        if index + 1 >= len(markers) or markers[index + 1].group(0) != END.format(name=name):
            raise ReadmeError(
                f"expected '{END.format(name=name)}' right after '{begin.group(0)}', "
                f"got {markers[index + 1].group(0) if index + 1 < len(markers) else 'the end of the file'!r}"
            )
        end = markers[index + 1]
        fragment = results / f"{name}_readme.md"
        if not fragment.is_file():
            raise ReadmeError(
                f"expected the fragment {fragment} for block {name!r}, got no such file; "
                f"run the benchmark that writes it, or remove the block's markers"
            )
        body = fragment.read_text(encoding="utf-8").strip("\n")
        out.append(text[position : begin.end()])
        out.append("\n" + _NOTE.format(name=name) + "\n" + body + "\n")
        position = end.start()
        seen.add(name)
        index += 2
    out.append(text[position:])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="the README (default: the repo's)")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results", help="folder of NAME_readme.md fragments"
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README is out of date")
    args = parser.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        new = render(text, args.results)
    except (OSError, ReadmeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = block_names(text)
    if new == text:
        print(
            f"{args.readme}: up to date ({len(names)} generated block(s): {', '.join(names) or 'none'})",
            file=sys.stderr,
        )
        return 0
    if args.check:
        diff = difflib.unified_diff(
            text.splitlines(keepends=True), new.splitlines(keepends=True), str(args.readme), "generated"
        )
        sys.stderr.writelines(diff)
        print(
            f"\n{args.readme} is out of date with {args.results}; run: python benchmarks/readme_tables.py",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: rewrote {len(names)} block(s): {', '.join(names)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
