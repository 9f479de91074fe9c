"""ITQ fit time on a CUDA GPU and CPU/GPU agreement (run where a GPU exists).

    python bench/gpu_itq.py [--rows 1000000]

Needs hashpivot installed (or built in place): ITQ's encode step uses the compiled core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hashpivot.itq import ITQ


def data(n: int, d: int = 384, seed: int = 0) -> np.ndarray:
    """Gaussian with a decaying spectrum (as sentence embeddings have), normalised."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    scale = np.geomspace(3, 0.05, d).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 17):
        m = min(n, s + (1 << 17)) - s
        x[s : s + m] = (rng.standard_normal((m, d), dtype=np.float32) * scale) @ basis
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    print(
        "torch",
        torch.__version__,
        "cuda",
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    )
    x = data(args.rows)
    for label, kw in (
        ("default (subsample max(32768, 10*dim) rows)", {}),
        (f"all {args.rows:,} rows", {"max_train": args.rows}),
    ):
        for dev in ("cuda",) if torch.cuda.is_available() else ():
            ITQ(128, device=dev, **kw).fit(x[:50000])  # warm-up: CUDA context, kernels
            torch.cuda.synchronize()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                ITQ(128, device=dev, **kw).fit(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            print(
                f"fit {dev} 384->128 bits, {label}: median {np.median(times):.3f} s "
                f"(runs {', '.join(f'{t:.3f}' for t in times)})"
            )
    sub = x[:20000]
    cpu = ITQ(128, device="cpu").fit(sub)
    t0 = time.perf_counter()
    ITQ(128, device="cpu").fit(sub)
    print(f"fit cpu 20,000 rows: {time.perf_counter() - t0:.3f} s")
    if torch.cuda.is_available():
        gpu = ITQ(128, device="cuda").fit(sub)
        diff = float(np.abs(cpu.projection - gpu.projection).max())
        a, b = cpu.encode(sub), gpu.encode(sub)
        flips = np.unpackbits(a ^ b, axis=1).sum(axis=1)
        print(
            f"cpu vs gpu: max |projection diff| {diff:.2e}, mean bit flips per code "
            f"{flips.mean():.4f} of 128, codes identical {np.mean(flips == 0):.4f}"
        )


if __name__ == "__main__":
    main()
