"""Run `llmc` in a child process without TRITON_INTERPRET, so builds compile real kernels.

Under pytest on a machine without a GPU, tests/conftest.py sets TRITON_INTERPRET=1 for the
interpreter-based kernel tests; a process in that mode cannot compile ahead of time.
"""

import os
import subprocess
import sys
from pathlib import Path


def llmc(*args, cwd: Path | None = None, wait: bool = True, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SOURCE_DATE_EPOCH", "TZ")}
    environ.update({k: str(v) for k, v in env.items()})
    if cwd is not None:
        Path(cwd).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "llmc.cli", *map(str, args)], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(proc) if wait else proc


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    return out
