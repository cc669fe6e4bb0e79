"""Make tensorrt-stubs 10.13 parse: its generated .pyi files name a parameter ``in`` (a Python
keyword) and put parameters without defaults after defaulted ones. Both are rewritten in
place (``in`` -> ``in_``; a late parameter gets ``= ...``); nothing else changes, so mypy still
checks every attribute and signature the harness uses against the stubs.

usage: python .ci/patch_trt_stubs.py STUBS_DIR
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

KEYWORD_PARAM = re.compile(r"([(,]\s*)in(\s*:)")
DEF_LINE = re.compile(r"^(\s*def \w+\()(.*)(\)\s*->.*:\s*)$")


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def fix_defaults(line: str) -> str:
    match = DEF_LINE.match(line)
    if not match:
        return line
    params = _split_params(match.group(2))
    seen_default = False
    fixed = []
    for param in params:
        bare = param.strip()
        if bare.startswith("*"):
            seen_default = False  # keyword-only parameters may lack defaults
        elif "=" in bare:
            seen_default = True
        elif seen_default:
            param = f"{param} = ..."
        fixed.append(param)
    return match.group(1) + ",".join(fixed) + match.group(3)


def patch(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    lines = [fix_defaults(KEYWORD_PARAM.sub(r"\1in_\2", line)) for line in text.splitlines()]
    patched = "\n".join(lines) + "\n"
    ast.parse(patched, filename=str(path))  # fail loudly if anything is still unparsable
    if patched != text:
        path.write_text(patched, encoding="utf-8")
        return True
    return False


def main() -> int:
    root = Path(sys.argv[1])
    stubs = sorted(root.rglob("*.pyi"))
    if not stubs:
        print(f"no .pyi files under {root}", file=sys.stderr)
        return 1
    changed = [str(p) for p in stubs if patch(p)]
    print(f"patched {len(changed)} of {len(stubs)} stub files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
