"""Forward+backward time of the matrix square roots behind the covariance heads.

The paper's speed claim (iSQRT-COV, CVPR 2018): Newton-Schulz needs only matrix products,
which GPUs run fast, where MPN-COV's eigendecomposition and SVD are slow there. Timed in one
run on the same post-ReLU feature maps, each pooled to a covariance, square-rooted and
vectorized (upper triangle), then a backward pass:

  isqrt   fgvc.ops.isqrt_cov (Newton-Schulz, N = 5)
  mpncov  fgvc.ops.eig_sqrtm.mpn_cov (torch.linalg.eigh)
  svd     torch.linalg.svd of the trace-normalized covariance, U sqrt(S) V^T (autograd)

Medians of interleaved rounds; ratios are time / iSQRT time from the same run (> 1: slower
than iSQRT). CPU rows always, CUDA rows when a GPU is present.

    python benchmarks/heads.py            # d 64/128/256/512, batch 10/32/128
    python benchmarks/heads.py --quick    # d 64/128/256, batch 10/32, fewer rounds
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

import torch
from _timing import time_ms

from fgvc.ops import covariance_pool, isqrt_cov, triu_vec
from fgvc.ops.eig_sqrtm import mpn_cov


def svd_sqrt_cov(x: torch.Tensor) -> torch.Tensor:
    """The same pre/post steps with the root by SVD (autograd through torch.linalg.svd)."""
    cov = covariance_pool(x)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-12)[:, None, None]
    u, s, vh = torch.linalg.svd(cov / trace)
    return triu_vec((u * s.sqrt()[:, None, :]) @ vh * trace.sqrt())


IMPLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "isqrt": lambda x: isqrt_cov(x, 5),
    "mpncov": mpn_cov,
    "svd": svd_sqrt_cov,
}


def step(impl: str, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xx = x.detach().requires_grad_()
        IMPLS[impl](xx).sum().backward()

    return run


def bench(device: str, dims: list[int], batches: list[int], hw: int, repeats: int) -> list[str]:
    rows = []
    for d in dims:
        for b in batches:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(b, d, hw, hw, generator=gen).relu().to(device)
            ms = time_ms({k: step(k, x) for k in IMPLS}, device, repeats)
            base = ms["isqrt"]
            rows.append(
                f"| {device} | {d} | {b} | {ms['isqrt']:.1f} | {ms['mpncov']:.1f} | "
                f"{ms['svd']:.1f} | {ms['mpncov'] / base:.2f} | {ms['svd'] / base:.2f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d 64/128/256, batch 10/32")
    parser.add_argument("--dims", type=int, nargs="+")
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--hw", type=int, default=14, help="feature map side (M = hw^2)")
    parser.add_argument("--repeats", type=int, help="rounds (default 5, 3 with --quick)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dims = args.dims or ([64, 128, 256] if args.quick else [64, 128, 256, 512])
    batches = args.batches or ([10, 32] if args.quick else [10, 32, 128])
    repeats = args.repeats or (3 if args.quick else 5)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        rows += bench(device, dims, batches, args.hw, repeats)
    print(f"$ python benchmarks/heads.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print(
        f"torch {torch.__version__}, float32, {args.hw}x{args.hw} map, forward+backward, "
        f"median of {repeats} interleaved rounds; CPU: {platform.processor() or platform.machine()}"
        f", {args.threads} threads{gpu}"
    )
    print()
    print(
        "| device | d | batch | iSQRT ms | MPN-COV (eigh) ms | SVD ms "
        "| eigh / iSQRT | SVD / iSQRT |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
