"""Forward+backward speed and memory of the iSQRT-COV meta-layer.

Compares, in one run and on the same inputs:
  fgvc     fgvc.ops.isqrt_cov (centred covariance, hand-fused backward)
  authors  the paper's formulation (X I_hat X^T, paper's hand-derived backward), our code
  eig      MPN-COV style square root by torch.linalg.eigh (autograd backward)
and two matmul floors timed alone as bmm in the same run: the floor, the GEMMs the algorithm
needs (covariance forward and backward, 3N-3 forward and 6N-6 backward d x d products, as
reverse mode through the iteration needs them), and the own floor, the fewer GEMMs fgvc does
(its backward takes 5N-5), in fgvc's dependency order.

    python benchmarks/meta_layer.py                 # CPU (and CUDA when present)
    python benchmarks/meta_layer.py --batch 10 --dim 256 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch
from _timing import time_ms

from fgvc.ops import isqrt_cov
from fgvc.ops.reference import authors_isqrt_cov, eig_sqrt_cov

IMPLS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "fgvc": isqrt_cov,
    "authors": authors_isqrt_cov,
    "eig": lambda x, n: eig_sqrt_cov(x),
}


def make_input(b: int, d: int, hw: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # post-ReLU features, as the meta-layer sees them after the reduction block
    return torch.randn(b, d, hw, hw, generator=gen).relu().to(device)


def fwd_bwd(impl: str, x: torch.Tensor, iterations: int) -> Callable[[], None]:
    fn = IMPLS[impl]
    grad = torch.ones(x.shape[0], x.shape[1] * (x.shape[1] + 1) // 2, device=x.device)

    def step() -> None:
        xx = x.detach().requires_grad_()
        out = fn(xx, iterations)
        out.backward(grad)

    return step


def floor_fn(x: torch.Tensor, iterations: int) -> Callable[[], None]:
    """The matmul floor: the GEMMs iSQRT-COV needs, at the plain ``bmm`` rate, nothing else.

    Covariance forward (d x M x d) and backward (d x d x M), and the d x d products of the
    iteration, forward 3N - 3, and backward 6N - 6: reverse mode through the coupled pair,
    two products per forward product (the paper's backward uses more). Each product reads
    two distinct operands and writes a third buffer; the products are independent.
    """
    b, d = x.shape[:2]
    feats = x.reshape(b, d, -1)
    gen = torch.Generator(device=x.device).manual_seed(1)
    ins = [torch.randn(b, d, d, generator=gen, device=x.device) / d**0.5 for _ in range(6)]
    outs = [torch.empty(b, d, d, device=x.device) for _ in range(6)]
    big_out = torch.empty_like(feats)
    n_square = (3 * iterations - 3) + (6 * iterations - 6) if iterations > 1 else 3

    def step() -> None:
        torch.bmm(feats, feats.mT, out=outs[0])  # covariance forward
        torch.bmm(ins[0], feats, out=big_out)  # covariance backward
        for i in range(n_square):
            torch.bmm(ins[i % 6], ins[(i + 1) % 6], out=outs[i % 6])

    return step


def own_floor_fn(x: torch.Tensor, iterations: int) -> Callable[[], None]:
    """fgvc's own products, fewer than the floor's (backward 5N - 5, see fgvc.ops.sqrtm),
    replayed in its dependency order (each GEMM reads what an earlier one wrote) as bare
    ``bmm`` into preallocated buffers: no elementwise work, no accumulation (a two-term
    sum is two products)."""
    b, d = x.shape[:2]
    feats = x.reshape(b, d, -1)
    centred = feats - feats.mean(dim=2, keepdim=True)
    sigma = torch.empty(b, d, d, device=x.device)
    # Values that keep their scale through the chained products (entries N(0, 1/d)): the
    # bare chain has no 1.5 I terms, and decaying values would end in slow denormals.
    gen = torch.Generator(device=x.device).manual_seed(2)
    a = torch.randn(b, d, d, generator=gen, device=x.device) / d**0.5
    pool = [torch.empty(b, d, d, device=x.device) for _ in range(64)]
    big = torch.empty_like(feats)
    grad0 = torch.randn(b, d, d, generator=gen, device=x.device) / d**0.5

    def step() -> None:
        free = iter(pool)

        def mm(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.bmm(u, v, out=next(free))

        torch.bmm(centred, centred.mT, out=sigma)  # covariance forward
        y, z = mm(a, a), a  # Y_1 (Z_1 = T_1 is elementwise)
        saved = []
        for k in range(2, iterations + 1):
            t = mm(z, y)
            saved.append((y, t))
            if k < iterations:
                z = mm(t, z)
            y = mm(y, t)
        # step 1: J = E T_1, then J T_1 and T_1 J (D_1 is elementwise)
        j = mm(grad0, a)
        mm(j, a)
        d_y, f = grad0, mm(a, j)
        for k, (y, t) in enumerate(saved, start=2):
            f_next = f
            if k < iterations:  # F_k: J = F T, J T, T J
                j = mm(f, t)
                mm(j, t)
                f_next = mm(t, j)
            mm(y, f)  # D_k: D T and Y F
            d_y = mm(d_y, t)
            f = f_next
        torch.bmm(d_y, feats, out=big)  # covariance backward

    return step


def saved_bytes(impl: str, x: torch.Tensor, iterations: int) -> int:
    """Bytes autograd keeps between forward and backward (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    xx = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        IMPLS[impl](xx, iterations)
    return sum(seen.values())


def peak_rss_child(impl: str, b: int, d: int, hw: int, iterations: int, runs: int = 3) -> float:
    """Peak resident memory (MiB) added by fwd+bwd, measured in a fresh process; the median
    of ``runs`` processes (single readings vary by some 10%)."""
    cmd = [sys.executable, __file__, "--rss-child", impl, str(b), str(d), str(hw), str(iterations)]
    peaks = [
        float(
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(runs)
    ]
    return statistics.median(peaks)


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_child(impl: str, b: int, d: int, hw: int, iterations: int) -> None:
    x = make_input(b, d, hw, torch.device("cpu"))
    step = fwd_bwd(impl, x, iterations)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = _peak_rss_mib()
    step()
    print(_peak_rss_mib() - before)


def run(
    device: torch.device, batches: list[int], dims: list[int], args: argparse.Namespace
) -> None:
    n = args.iterations
    print(
        f"\n## {device.type.upper()} ({torch.get_num_threads()} threads)"
        if device.type == "cpu"
        else f"\n## CUDA ({torch.cuda.get_device_name(device)})"
    )
    print(f"forward+backward ms, median of {args.repeats}; {args.hw}x{args.hw} map, N={n}, fp32\n")
    print(
        "| B | d | fgvc | authors | eig | floor | own floor | authors/fgvc | eig/fgvc "
        "| fgvc/floor | fgvc/own floor | saved MiB fgvc/authors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for b in batches:
        for d in dims:
            x = make_input(b, d, args.hw, device)
            fns = {k: fwd_bwd(k, x, n) for k in IMPLS}
            fns["floor"] = floor_fn(x, n)
            fns["own"] = own_floor_fn(x, n)
            times = time_ms(fns, device, args.repeats, warmup=2)
            floor = times["floor"]
            mib = {k: saved_bytes(k, x, n) / 2**20 for k in ("fgvc", "authors")}
            print(
                f"| {b} | {d} | {times['fgvc']:.1f} | {times['authors']:.1f} | {times['eig']:.1f}"
                f" | {floor:.1f} | {times['own']:.1f} | {times['authors'] / times['fgvc']:.2f}x"
                f" | {times['eig'] / times['fgvc']:.2f}x | {times['fgvc'] / floor:.3f}"
                f" | {times['fgvc'] / times['own']:.3f}"
                f" | {mib['fgvc']:.1f} / {mib['authors']:.1f} |",
                flush=True,
            )
    if device.type == "cpu" and not args.no_rss:
        print()
        for b in batches:
            d = dims[-1]
            peaks = {k: peak_rss_child(k, b, d, args.hw, n) for k in ("fgvc", "authors")}
            print(
                f"peak RSS added by one fwd+bwd (B={b}, d={d}, fresh process): "
                f"fgvc {peaks['fgvc']:.1f} MiB, authors {peaks['authors']:.1f} MiB"
            )
    if device.type == "cuda":
        b, d = batches[0], dims[-1]
        x = make_input(b, d, args.hw, device)
        for k in ("fgvc", "authors"):
            step = fwd_bwd(k, x, n)
            step()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"CUDA peak memory above inputs, B={b}, d={d}: {k} {peak:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 32])
    parser.add_argument("--dim", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--hw", type=int, default=28)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        impl, *nums = args.rss_child
        _rss_child(impl, *map(int, nums))
        return
    run(torch.device("cpu"), args.batch, args.dim, args)
    if torch.cuda.is_available() and not args.cpu_only:
        run(torch.device("cuda"), args.batch, args.dim, args)


if __name__ == "__main__":
    main()
