"""PyTorch eager (CUDA) timings of the zoo's tiny transformers, for the rows of BENCHMARKS.md
beside the `engines` benchmark's: the same architectures and inputs shapes (weights differ: timing
does not depend on them).

    python3 tools/bench_torch_zoo.py [--seconds 2]

Prints one JSON line per model and batch: {"model", "batch", "median_ms", "p95_ms"}.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_model_zoo import gpt2_tiny, vit_tiny  # noqa: E402


def timed(fn, seconds):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 500):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2], times[int((len(times) - 1) * 0.95)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    for name, build, shape, ids in [("ViT tiny", vit_tiny, (3, 32, 32), False), ("GPT-2 tiny", gpt2_tiny, (8,), True)]:
        model = build().eval().cuda()
        for batch in [1, 64]:
            x = torch.randint(0, 100, (batch, *shape)).cuda() if ids else torch.rand(batch, *shape).cuda()
            with torch.no_grad():
                median, p95 = timed(lambda: model(x), args.seconds)
            print(json.dumps({"model": name, "batch": batch, "median_ms": median, "p95_ms": p95}))


if __name__ == "__main__":
    main()
