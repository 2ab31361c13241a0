"""The GPU's cost of one graph node: a CUDA graph of N tiny kernels (one-element adds), replayed,
divided by N. A decode step of L layers with k launches each cannot take less than L * k times this.

    python3 benchmarks/h200/launch_floor.py
"""

import torch
from triton.testing import do_bench


def per_node_us(nodes: int, elements: int = 1) -> float:
    x = torch.zeros(elements, device="cuda")
    graph = torch.cuda.CUDAGraph()
    x.add_(1)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        for _ in range(nodes):
            x.add_(1)
    return do_bench(graph.replay, warmup=25, rep=200, return_mode="median") * 1e3 / nodes


if __name__ == "__main__":
    for nodes in (50, 200, 800):
        for elements in (1, 1 << 20):
            print(f"graph of {nodes:4d} adds of {elements:8d} floats: {per_node_us(nodes, elements):6.2f} us per node")
