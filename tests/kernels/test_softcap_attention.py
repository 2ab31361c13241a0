"""`softcap_paged_attention`: every kernel impl against the native function, with caps that bite."""

import pytest
import torch
from harness import parametrize, run
from test_attention import CASES, make_case
from tolerances import assert_close

from llmc.aot.ir import OPS

NAMES = ["decode_gqa_window", "decode_mqa_empty", "prefill_gqa_chunked", "prefill_mqa_window"]


def _args(name, dtype, soft_cap):
    q, *rest, scale, window = make_case(name, dtype)
    return (q * 4, *rest, scale, window, soft_cap)  # larger scores, so that a cap of 1.5 saturates some


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # tanh of saturated scores
@parametrize("softcap_paged_attention", _args, name=NAMES, dtype=[torch.float32, torch.bfloat16], soft_cap=[1.5, 30.0])
def test_softcap_paged_attention(provider, name, dtype, soft_cap):
    args = _args(name, dtype, soft_cap)
    block_n = CASES[name].block_n
    override = {} if block_n is None else {"BLOCK_N": block_n}
    expected = OPS["softcap_paged_attention"].native(*args)
    got = run("softcap_paged_attention", provider, *args, **override)
    assert_close(got, expected, dtype, f"{provider} {name} cap {soft_cap}")


def test_the_cap_changes_the_result():
    args = _args("prefill_gqa_chunked", torch.float32, 1.5)
    capped = OPS["softcap_paged_attention"].native(*args)
    assert not torch.allclose(capped, OPS["paged_attention"].native(*args[:-1]), atol=1e-3)
