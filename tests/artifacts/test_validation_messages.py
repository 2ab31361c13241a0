"""impls.lock.json and kernels/index.json errors name the file, the field and what is wrong, word for word.

(Written for the survivors of the mutation run in docs/MUTATION.md: the checks refused these
documents, but a wrong file or field name in the message went unnoticed.)
"""

import pytest
from bundle_samples import KERNEL_ID, KERNEL_INDEX, LOCK, fresh

from llmc.artifacts import validate_kernel_index, validate_lock
from llmc.errors import BundleError

NODE = fresh(LOCK["nodes"]["decode_b2/norm"])
KERNEL = fresh(KERNEL_INDEX["kernels"][KERNEL_ID])


@pytest.mark.parametrize("obj, message", [
    ([], "impls.lock.json: must be a JSON object"),
    ({"nodes": []}, "impls.lock.json: field 'nodes' must be an object"),
    ({"nodes": {"norm": NODE}}, "impls.lock.json: field \"nodes['norm']\" must be named '<plan>/<node>'"),
    ({"nodes": {"b1/norm": []}}, "impls.lock.json: field \"nodes['b1/norm']\" must be an object"),
    ({"nodes": {"b1/norm": {**NODE, "op": ""}}}, "impls.lock.json: field \"nodes['b1/norm'].op\" must be a non-empty string"),
])
def test_lock_messages(obj, message):
    with pytest.raises(BundleError) as e:
        validate_lock(obj)
    assert str(e.value) == message


@pytest.mark.parametrize("obj, message", [
    ("x", "kernels/index.json: must be a JSON object"),
    ({}, "kernels/index.json: field 'kernels' is missing"),
    ({"kernels": [1]}, "kernels/index.json: field 'kernels' must be an object"),
    ({"kernels": {"ab": KERNEL}},
     "kernels/index.json: field \"kernels['ab']\" must be keyed by the kernel's sha256 (64 lowercase hex characters)"),
    ({"kernels": {KERNEL_ID: 3}}, f"kernels/index.json: field \"kernels['{KERNEL_ID}']\" must be an object"),
    ({"kernels": {KERNEL_ID: {**KERNEL, "file": "weights/x.cubin"}}},
     f"kernels/index.json: field \"kernels['{KERNEL_ID}'].file\" must be a path under kernels/"),
    ({"kernels": {KERNEL_ID: {**KERNEL, "params": {}}}},
     f"kernels/index.json: field \"kernels['{KERNEL_ID}'].params\" must be a list"),
    ({"kernels": {KERNEL_ID: {**KERNEL, "params": [{"name": "x"}]}}},
     f"kernels/index.json: field \"kernels['{KERNEL_ID}'].params[0].type\" is missing"),
])
def test_kernel_index_messages(obj, message):
    with pytest.raises(BundleError) as e:
        validate_kernel_index(obj)
    assert str(e.value) == message
