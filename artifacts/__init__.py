"""Bundle format I/O: canonical JSON, the manifest contract, writing, reading, verifying, packing.

Standard library only (plus llmc.errors): the GPU serving path installs no torch or triton.
"""

from .canonical import dumps, load_file, loads, sha256_bytes, sha256_file
from .archive import extract as unpack
from .manifest import (DTYPES, FORMAT_VERSION, check_format_version, is_safe_relpath, root_digest,
                       validate_kernel_index, validate_lock, validate_manifest)
from .plan_schema import validate_plan
from .pack import pack
from .reader import Bundle, Mismatch, VerifyReport, verify_bundle
from .safetensors_check import check_checkpoint, check_safetensors, check_sharded_index
from .writer import BundleWriter, check_output_path, is_bundle_dir

__all__ = [
    "DTYPES", "FORMAT_VERSION", "Bundle", "BundleWriter", "Mismatch", "VerifyReport",
    "check_checkpoint", "check_format_version", "check_output_path", "check_safetensors", "check_sharded_index",
    "dumps", "is_bundle_dir", "is_safe_relpath", "load_file", "loads", "pack", "root_digest", "sha256_bytes",
    "sha256_file", "unpack", "validate_kernel_index", "validate_lock", "validate_manifest", "validate_plan",
    "verify_bundle",
]
