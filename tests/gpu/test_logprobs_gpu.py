"""logprobs on a real GPU at Qwen3 (151936) and Llama-3 (128256) vocabularies, against the native op.

Rows ask for no, one, some and all MAX_LOGPROBS top slots, one row is skipped; target tokens are
prompt tokens on half the rows and the sampled token on the others.
"""

import pytest
import torch
from triton.runtime.jit import JITFunction

import llmc.kernels
from llmc.aot.ir import OPS
from llmc.aot.ir.ops.logprobs import MAX_LOGPROBS
from llmc.kernels.launch import run_eager

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    if not isinstance(llmc.kernels.logprobs.logprobs_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 is set for this process: its kernels are interpreted, not compiled")


@pytest.mark.parametrize("vocab", [151936, 128256])
def test_logprobs_gpu_matches_native(vocab):
    g = torch.Generator(device="cuda").manual_seed(vocab)
    asked = torch.tensor([0, 1, 5, MAX_LOGPROBS, -1, 3, MAX_LOGPROBS, 2], dtype=torch.int32, device="cuda")
    rows = asked.numel()
    logits = torch.randn(rows, vocab, generator=g, device="cuda") * 5.0
    logits[5, 1000:1010] = 30.0  # ties at the top: lowest id first
    next_tokens = torch.randint(0, vocab, (rows,), generator=g, device="cuda", dtype=torch.int32)
    targets = torch.randint(0, vocab, (rows,), generator=g, device="cuda", dtype=torch.int32)
    targets[::2] = -1
    args = (logits, next_tokens, targets, asked)
    impl = OPS["logprobs"].impls["triton"]
    major, minor = torch.cuda.get_device_capability()
    if not impl.available_on(f"sm{major}{minor}"):
        pytest.skip(f"logprobs/triton does not run on sm{major}{minor}")
    got = run_eager(impl, args, out_fill=float("nan"))
    want = OPS["logprobs"].native(*args)
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-5)
    assert torch.equal(got[1], want[1]), f"top ids differ: {got[1].tolist()} vs {want[1].tolist()}"
    torch.testing.assert_close(got[2], want[2], atol=1e-4, rtol=1e-5)
    assert got[1][5, :3].tolist() == [1000, 1001, 1002]
