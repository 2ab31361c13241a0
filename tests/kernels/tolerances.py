"""One table of tolerances per dtype for kernel-vs-native tests, and the comparison that uses it.

A kernel that computes in float32 and rounds once to the output dtype differs from the native
torch function by at most an ulp or two of that dtype; the table allows that and little more.
"""

import torch

# dtype -> (atol, rtol): |actual - expected| <= atol + rtol * |expected|, elementwise
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1.6e-2),
    torch.float16: (1e-3, 2e-3),
}


def _where(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), shape))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Fail unless `actual` matches `expected` within TOLERANCES[dtype], saying by how much it does not.

    NaN (the poison tests fill outputs with) must appear exactly where `expected` has NaN.
    """
    atol, rtol = TOLERANCES[dtype]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != expected {expected.dtype}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        bad = (nan_a != nan_e).nonzero()[0].tolist()
        count = int((nan_a != nan_e).sum())
        raise AssertionError(
            f"{what}: {count} element(s) NaN in one result but not the other (unwritten or poisoned output?), "
            f"first at {tuple(bad)}: actual {a[tuple(bad)].item()}, expected {e[tuple(bad)].item()}"
        )
    a, e = a.masked_fill(nan_a, 0.0), e.masked_fill(nan_e, 0.0)
    same_inf = torch.isinf(a) & (a == e)
    err = (a - e).abs().masked_fill(same_inf, 0.0)
    allowed = atol + rtol * e.abs()
    failed = (err > allowed) | (torch.isinf(a) != torch.isinf(e))
    if not bool(failed.any()):
        return
    rel = err / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
    worst_abs, worst_rel = int(err.argmax()), int(rel.masked_fill(~failed, 0.0).argmax())
    first = int(failed.flatten().nonzero()[0])
    shape = a.shape
    raise AssertionError(
        f"{what} ({dtype}): {int(failed.sum())} of {a.numel()} elements exceed atol={atol:g} + rtol={rtol:g}*|expected|; "
        f"max abs error {err.flatten()[worst_abs].item():.3g} at {_where(worst_abs, shape)} "
        f"(atol exceeded {err.flatten()[worst_abs].item() / atol:.3g}x), "
        f"max rel error among failures {rel.flatten()[worst_rel].item():.3g} at {_where(worst_rel, shape)} "
        f"(rtol exceeded {rel.flatten()[worst_rel].item() / rtol:.3g}x); "
        f"first failure at {_where(first, shape)}: actual {a.flatten()[first].item()!r}, "
        f"expected {e.flatten()[first].item()!r}"
    )
