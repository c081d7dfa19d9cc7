#!/usr/bin/env python
"""Run ``mypy mapping`` and compare its errors with the committed baseline.

The baseline (``.ci/mypy-baseline.txt``) lists the errors that are known, one per line as
``path: message [code]`` (line numbers left out so unrelated edits do not move them). A
new error fails; a fixed one is reported so the baseline is shrunk with ``--update``.
The baseline only ever shrinks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
_ERROR = re.compile(r"^(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<msg>.*)$")


def current() -> Counter[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "mapping", "--no-error-summary", "--hide-error-context"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1):  # 2: mypy itself failed
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(2)
    found: Counter[str] = Counter()
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line)
        if m:
            found[f"{m['path']}: {m['msg']}"] += 1
    return found


def main() -> int:
    now = current()
    if "--update" in sys.argv:
        old = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else None
        if old is not None and now - old:
            print("refusing to grow the baseline; new errors:", *sorted(now - old), sep="\n  ")
            return 1
        BASELINE.write_text("".join(f"{e}\n" for e in sorted(now.elements())))
        print(f"mypy baseline: {sum(now.values())} errors")
        return 0
    base = Counter(BASELINE.read_text().splitlines())
    new, fixed = now - base, base - now
    if new:
        print(f"mypy: {sum(new.values())} error(s) not in the baseline:", *sorted(new), sep="\n  ")
        return 1
    print(f"mypy: {sum(now.values())} known errors (baseline {sum(base.values())})")
    if fixed:
        print(
            f"mypy: {sum(fixed.values())} fixed; shrink the baseline: python .ci/mypy_baseline.py --update"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
