"""A bundle whose plans lack a step input this llmc fills was built by an older llmc: refused, in one line."""

import pytest

from checkpoints import make_checkpoint
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
from llmc.artifacts import Bundle
from llmc.artifacts.validate import check_plan, weight_names
from llmc.errors import BundleError


def test_a_plan_without_min_p_asks_for_a_rebuild(tmp_path):
    out = tmp_path / "bundle"
    build(make_checkpoint("llama", tmp_path / "hf"), out, BuildConfig(max_batch_size=2, max_seq_len=32,
                                                                        max_num_batched_tokens=16), use_cache=False)
    bundle = Bundle.open(out)
    name = bundle.plans()[0]
    plan = bundle.plan(name)
    args = (name, bundle.manifest, bundle.kernel_index()["kernels"], weight_names(bundle))
    check_plan(plan, *args)  # as built: accepted
    del plan["inputs"]["min_p"]
    with pytest.raises(BundleError, match=r"field 'inputs' lacks min_p, .* an older llmc built it"):
        check_plan(plan, *args)
