"""Top-1 accuracy of the shipped model on the full 10k Fashion-MNIST test set, computed by this
crate (the `infer` example, on the GPU) and by ONNX Runtime, on the same inputs.

    cargo build --release --example infer
    python3 tools/eval_accuracy.py [--infer target/release/examples/infer] [--chunk 250]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--infer", default=os.path.join(ROOT, "target", "release", "examples", "infer"))
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "models", "fashion_mobilenetv2.onnx"))
    p.add_argument("--chunk", type=int, default=250)
    args = p.parse_args()
    images, labels = fashion_mnist.load("t10k")
    x = images[:, None].astype(np.float32) / 255.0
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    ort_pred, crate_pred = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(x), args.chunk):
            chunk = x[start:start + args.chunk]
            ort_pred.append(sess.run(None, {sess.get_inputs()[0].name: chunk})[0].argmax(1))
            inp, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
            np.save(inp, chunk)
            subprocess.run([args.infer, "--model", args.model, "--input", inp, "--output", out], check=True,
                           stderr=subprocess.DEVNULL)
            crate_pred.append(np.load(out).argmax(1))
    ort_acc = float((np.concatenate(ort_pred) == labels).mean() * 100)
    crate_acc = float((np.concatenate(crate_pred) == labels).mean() * 100)
    agree = int((np.concatenate(ort_pred) == np.concatenate(crate_pred)).sum())
    result = {"test_images": len(x), "onnxruntime_top1": round(ort_acc, 2), "crate_top1": round(crate_acc, 2),
              "same_top1_as_onnxruntime": agree}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
