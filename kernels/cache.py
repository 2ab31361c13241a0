"""Writing new keys and values into the paged KV cache, at the flat slot of each token."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def kv_cache_write_kernel(
    # pointers
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    # sizes
    width, stride_k, stride_v, stride_k_slot, stride_v_slot,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): columns c*BLOCK ... of token t's k and v rows (width = kv_heads * head_dim)
    # go to slot slot_mapping[t] of the caches; a negative slot writes nothing
    token = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    mask = (cols < width) & (slot >= 0)
    k = tl.load(k_ptr + token * stride_k + cols, mask=mask)
    v = tl.load(v_ptr + token * stride_v + cols, mask=mask)
    tl.store(k_cache_ptr + slot * stride_k_slot + cols, k, mask=mask)
    tl.store(v_cache_ptr + slot * stride_v_slot + cols, v, mask=mask)


@OPS["kv_cache_write"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda k, v, k_cache, v_cache, slot_mapping: k_cache.is_contiguous() and v_cache.is_contiguous()
    and k.shape[1] == v.shape[1] == k_cache.shape[2] * k_cache.shape[3] and k.stride(1) == v.stride(1) == 1,
)
def kv_cache_write_triton(k, v, k_cache, v_cache, slot_mapping):
    # grid (tokens, column blocks of up to 1024); caches are [blocks, block_size, kv_heads, head_dim]
    width = k.shape[1]
    block = min(triton.next_power_of_2(width), 1024)
    return [
        Launch(
            kv_cache_write_kernel,
            grid=(k.shape[0], triton.cdiv(width, block)),
            args=(k, v, k_cache, v_cache, slot_mapping, width, k.stride(0), v.stride(0),
                  k_cache.stride(1), v_cache.stride(1)),
            constexprs={"BLOCK": block},
            num_warps=4,
        )
    ]
