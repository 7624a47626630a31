"""PyTorch timings for the `engines` benchmark: the same torchvision MobileNetV2 with the same
fixed-seed synthetic weights as `make_synthetic.py` (so the same network as the ONNX files),
fp32, cuDNN defaults, on the input the benchmark wrote.

    python3 tools/bench_torch.py {cifar|imagenet} INPUT.npy [--seconds 3]

Prints one JSON line: eager (input copied from the host, output copied back, synchronised) median
and p95 in ms, and for batch 1 the GPU-only time of a CUDA-graph replay. Needs CUDA.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_synthetic import synthetic_mobilenetv2  # noqa: E402


def timed(fn, seconds):
    for _ in range(5):
        fn()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 10 or (time.perf_counter() < deadline and len(times) < 500):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2], times[int((len(times) - 1) * 0.95)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=["cifar", "imagenet"])
    p.add_argument("input")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return
    model = synthetic_mobilenetv2(10 if args.model == "cifar" else 1000, args.seed).cuda()
    x_host = torch.from_numpy(np.load(args.input))
    result = {}
    with torch.no_grad():
        def eager():
            y = model(x_host.cuda())
            y.cpu()
        result["eager_median_ms"], result["eager_p95_ms"] = timed(eager, args.seconds)
        if x_host.shape[0] == 1:
            static_x = x_host.cuda()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(static_x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(static_x)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            gpu = []
            for i in range(205):
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                if i >= 5:
                    gpu.append(start.elapsed_time(end))
            gpu.sort()
            result["graph_gpu_median_ms"] = gpu[len(gpu) // 2]
    result["device"] = torch.cuda.get_device_name()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
