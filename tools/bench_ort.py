"""ONNX Runtime (CPU) timings for the `engines` benchmark, on the inputs it wrote.

    python3 tools/bench_ort.py MODEL.onnx INPUT.npy [--seconds 3]

Prints one JSON line: {"median_ms": .., "p95_ms": .., "runs": ..}.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("input")
p.add_argument("--seconds", type=float, default=3.0)
args = p.parse_args()
sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
x = np.load(args.input)
# Token-id models take int64: the benchmark writes ids as float32 values.
if sess.get_inputs()[0].type == "tensor(int64)":
    x = np.round(x).astype(np.int64)
feed = {sess.get_inputs()[0].name: x}
for _ in range(3):
    sess.run(None, feed)
times = []
deadline = time.perf_counter() + args.seconds
while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
    t = time.perf_counter()
    sess.run(None, feed)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2], "p95_ms": times[int((len(times) - 1) * 0.95)], "runs": len(times)}))
