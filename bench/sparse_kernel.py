"""Benchmark: what weight sparsity buys on CPU, per 3×3 convolution of the reduced ResNet-18 (width 20).

SparCL counts FLOPs as if pruned weights cost nothing; a masked dense convolution costs as much as a dense
one. Per residual-stage shape (batch 32, 32×32 images), on one thread, side by side:

* ``dense``   ``F.conv2d`` with the masked weights (zeros included): what training runs;
* ``im2col``  the same product as ``unfold`` and a dense matrix product (the sparse path's baseline);
* ``csr``     ``unfold`` and ``torch.sparse.mm`` with the weights in CSR at 75 % and 90 % sparsity.

Prints milliseconds per forward and the speed-up of ``csr`` over ``dense``; writes
``bench/results/sparse_kernel.json``.

Usage: ``python bench/sparse_kernel.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import torch
from torch.nn import functional as F

from streamlmu.vision.sparse_training import magnitude_mask

SHAPES = ((20, 32), (40, 16), (80, 8), (160, 4))  # channels, map size of each residual stage
BATCH = 32
SPARSITIES = (0.75, 0.9)


def calls(channels: int, size: int, sparsity: float) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, channels, size, size, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g)
    weight = weight * magnitude_mask(weight, sparsity)
    matrix = weight.flatten(1)
    csr = matrix.to_sparse_csr()

    def columns() -> torch.Tensor:  # (C·9, B·H·W)
        return F.unfold(x, 3, padding=1).transpose(0, 1).reshape(channels * 9, -1)

    return {"dense": lambda: F.conv2d(x, weight, padding=1),
            "im2col": lambda: matrix @ columns(),
            "csr": lambda: torch.sparse.mm(csr, columns())}


def main() -> None:
    args = timing.arguments(__doc__, "sparse_kernel")
    rounds, block = (1, 0.05) if args.quick else (7, 0.3)
    rows = []
    print(f"{'channels':>8} {'map':>4} {'sparsity':>8} {'dense ms':>9} {'im2col ms':>10} {'csr ms':>8} "
          f"{'csr speed-up':>12}")
    for channels, size in SHAPES:
        for sparsity in SPARSITIES:
            ms = {k: v * 1e3 for k, v in timing.measure(calls(channels, size, sparsity), rounds, block).items()}
            rows.append({"channels": channels, "map": size, "sparsity": sparsity, "ms": ms,
                         "csr_speedup": ms["dense"] / ms["csr"]})
            print(f"{channels:>8} {size:>4} {sparsity:>8.2f} {ms['dense']:>9.3f} {ms['im2col']:>10.3f} "
                  f"{ms['csr']:>8.3f} {ms['dense'] / ms['csr']:>12.2f}")
    timing.write_report({"batch": BATCH, "rows": rows, "machine": timing.machine()}, args.out)


if __name__ == "__main__":
    main()
