"""Where a tensor-parallel bundle keeps each rank's share: `manifest["parallel"]` names the number
of ranks, and rank r's weights are `weights/rank{r}/*.safetensors` (a single-rank bundle's are
`weights/*.safetensors`). Every rank runs the same plans, so every rank's weights hold the same
tensor names, dtypes and shapes; only the values differ."""

from __future__ import annotations

from llmc.errors import BundleError


def tensor_parallel_size(manifest: dict) -> int:
    size = manifest.get("parallel", {}).get("tensor_parallel_size", 1)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise BundleError(f"manifest.json: field 'parallel.tensor_parallel_size' is {size!r}, not a positive integer; "
                          "rebuild the bundle with llmc build")
    return size


def weight_dir(manifest: dict, rank: int) -> str:
    return f"weights/rank{rank}/" if tensor_parallel_size(manifest) > 1 else "weights/"


def weight_files(manifest: dict, rank: int = 0) -> list[str]:
    """Rank `rank`'s safetensors files, sorted (bundle-relative paths)."""
    prefix = weight_dir(manifest, rank)
    files = sorted(f for f in manifest["files"]
                   if f.startswith(prefix) and f.endswith(".safetensors") and "/" not in f[len(prefix):])
    if not files and tensor_parallel_size(manifest) > 1:
        raise BundleError(f"manifest.json lists no {prefix}*.safetensors for rank {rank}; rebuild the bundle")
    return files


def check_rank_weights(bundle) -> None:
    """Refuse, naming the file, a rank whose weights' headers differ from rank 0's (a file copied in
    from another build). Reads headers only."""
    from llmc.runtime.backends.cuda_memory import (
        read_safetensors_header,  # plain file reading, no driver
    )

    def tensors(rank: int) -> tuple[dict, dict]:
        specs, where = {}, {}
        for rel in weight_files(bundle.manifest, rank):
            for name, (dtype, shape, _, _) in read_safetensors_header(bundle.file(rel)).items():
                specs[name], where[name] = (dtype, list(shape)), rel
        return specs, where

    first, _ = tensors(0)
    for rank in range(1, tensor_parallel_size(bundle.manifest)):
        specs, where = tensors(rank)
        for name, spec in specs.items():
            if name not in first:
                raise BundleError(f"{where[name]}: holds tensor {name!r}, which rank 0's weights lack; the file is from "
                                  "another build: rebuild the bundle")
            if spec != first[name]:
                raise BundleError(f"{where[name]}: tensor {name!r} is {spec[0]} {spec[1]}, rank 0's is {first[name][0]} "
                                  f"{first[name][1]}; the file is from another build: rebuild the bundle")
        missing = sorted(first.keys() - specs.keys())
        if missing:
            raise BundleError(f"{weight_dir(bundle.manifest, rank)}: lacks tensor {missing[0]!r}, which rank 0's weights "
                              "hold; a file is from another build: rebuild the bundle")
