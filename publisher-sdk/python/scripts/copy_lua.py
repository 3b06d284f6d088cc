"""The package's build step: copies the Lua scripts from their one source,
`publisher-sdk/wire/lua/`, into `src/sse_publisher/lua/`, which the package ships.

    python3 scripts/copy_lua.py          # copy (after changing a script)
    python3 scripts/copy_lua.py --check  # fail unless the copies are byte for byte the source
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SOURCE = HERE.parent / "wire" / "lua"
COPY = HERE / "src" / "sse_publisher" / "lua"


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    sources = {path.name: path.read_bytes() for path in sorted(SOURCE.glob("*.lua"))}
    if not sources:
        print(f"copy_lua: no scripts in {SOURCE}", file=sys.stderr)
        return 1
    copies = {path.name: path.read_bytes() for path in sorted(COPY.glob("*.lua"))}
    if check:
        stale = sorted(name for name in sources.keys() | copies.keys() if sources.get(name) != copies.get(name))
        if stale:
            print(
                "copy_lua: src/sse_publisher/lua/ differs from publisher-sdk/wire/lua/ in "
                + ", ".join(stale)
                + "; run python3 publisher-sdk/python/scripts/copy_lua.py",
                file=sys.stderr,
            )
            return 1
        return 0
    COPY.mkdir(parents=True, exist_ok=True)
    for name in copies.keys() - sources.keys():
        (COPY / name).unlink()
    for name, text in sources.items():
        (COPY / name).write_bytes(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
