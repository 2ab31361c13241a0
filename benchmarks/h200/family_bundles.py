"""Tiny bundles of every family, built here on the CPU for a GPU target, and checked there.

    python benchmarks/h200/family_bundles.py build --target sm90 --out .bundles   # on the CPU machine
    python benchmarks/h200/family_bundles.py verify --out .bundles                 # on the GPU machine

`build` makes each family's random-weight checkpoint (tests/checkpoints.py), in float32 and, for
the dense families, an FP8 build too; `verify` runs `llmc verify --run --device cuda` on every
bundle (the self-test the CPU build recorded, replayed on the GPU) and prints one line each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

MOE = {"qwen3_moe", "mixtral"}


def build(target: str, out: Path) -> None:
    from checkpoints import FAMILIES, make_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            ckpt = make_checkpoint(family, Path(tmp) / family)
            variants = [("", [])] + ([] if family in MOE else [("-fp8", ["--quantize", "fp8"])])
            for suffix, extra in variants:
                bundle = out / f"{family}{suffix}"
                if (bundle / "manifest.json").is_file():
                    continue
                t0 = time.perf_counter()
                cmd = [sys.executable, "-m", "llmc.cli", "build", str(ckpt), "--target", target, *extra, "-o", str(bundle)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                status = "ok" if done.returncode == 0 else f"FAILED: {done.stderr.strip().splitlines()[-1:]}"
                print(f"{bundle.name:24} built in {time.perf_counter() - t0:5.1f} s  {status}", flush=True)


def verify(out: Path) -> int:
    failed = 0
    for bundle in sorted(p for p in out.iterdir() if (p / "manifest.json").is_file()):
        done = subprocess.run([sys.executable, "-m", "llmc.cli", "verify", "--run", "--device", "cuda", str(bundle)],
                              capture_output=True, text=True)
        lines = (done.stdout + done.stderr).strip().splitlines()
        failed += done.returncode != 0
        print(f"{bundle.name:24} exit {done.returncode}  {lines[-1] if lines else ''}", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["build", "verify"])
    parser.add_argument("--target", default="sm90")
    parser.add_argument("--out", type=Path, default=Path(".bundles"))
    args = parser.parse_args()
    if args.action == "build":
        build(args.target, args.out)
    else:
        sys.exit(1 if verify(args.out) else 0)


if __name__ == "__main__":
    main()
