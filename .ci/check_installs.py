"""Every `pip install` line of the README must resolve from the public package index alone.

Each line is resolved with `pip install --isolated --dry-run` in a throwaway venv, so neither this
machine's pip configuration (local wheels, find-links) nor what is already installed can hide a
conflict. On a failure, prints the pip error's key lines and exits 1.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY_LINE = re.compile(r"ERROR:|depends on|requested|conflict|No matching distribution|Could not find", re.I)


def readme_install_lines(readme: str) -> list[str]:
    """The arguments of each distinct `pip install ...` in the README: shell code blocks and inline code."""
    found: list[str] = []
    fence = None
    for line in readme.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None:
            pattern = r"`pip install ([^`]+)`"  # inline code in prose and tables
        elif fence in ("bash", "sh", "console", ""):
            pattern = r"pip install ([^&|;#]+)"
        else:
            continue
        for match in re.finditer(pattern, line):
            args = match.group(1).strip()
            if args not in found:
                found.append(args)
    return found


def pip_arguments(line: str) -> list[str]:
    """The line's arguments less quiet flags: the resolver's answer is what we want to see."""
    return [a for a in shlex.split(line) if a not in ("-q", "--quiet")]


def key_lines(pip_output: str, limit: int = 4) -> list[str]:
    return [line.strip() for line in pip_output.splitlines() if KEY_LINE.search(line)][:limit]


def resolve(python: Path, line: str) -> tuple[str, int, str]:
    cmd = [str(python), "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
           "--disable-pip-version-check", *pip_arguments(line)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return line, done.returncode, done.stdout + done.stderr


def main() -> int:
    lines = readme_install_lines((ROOT / "README.md").read_text())
    if not lines:
        print("check_installs: the README has no pip install line", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="llmc-install-check-") as tmp:
        venv.create(tmp, with_pip=True)
        python = Path(tmp) / "bin" / "python"
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda line: resolve(python, line), lines))
    failed = 0
    for line, code, output in results:
        if code == 0:
            print(f"resolves: pip install {line}")
            continue
        failed += 1
        print(f"DOES NOT RESOLVE from the public index: pip install {line}", file=sys.stderr)
        for key in key_lines(output) or output.strip().splitlines()[-2:]:
            print(f"    {key}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
