"""The GPU kernel tests generate their cases with tests/kernels/harness.py, as the interpreted ones do."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))
