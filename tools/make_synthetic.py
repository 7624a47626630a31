"""Exports the two performance workloads: torchvision MobileNetV2 with fixed-seed SYNTHETIC weights.

    python3 tools/make_synthetic.py --out-dir assets/models

Not trained; for benchmarks and numerical tests only. BatchNorm statistics are randomised too so
that folding them into the convolutions is exercised with non-trivial values.
  mobilenetv2_cifar_synthetic.onnx     input [N, 3, 32, 32],   10 classes (the article's shape)
  mobilenetv2_imagenet_synthetic.onnx  input [N, 3, 224, 224], 1000 classes
"""
import argparse
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from train_fashion import export  # noqa: E402


def synthetic_mobilenetv2(num_classes, seed):
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="assets/models")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, classes, side in [("cifar", 10, 32), ("imagenet", 1000, 224)]:
        model = synthetic_mobilenetv2(classes, args.seed)
        path = os.path.join(args.out_dir, f"mobilenetv2_{name}_synthetic.onnx")
        export(model, torch.zeros(1, 3, side, side), path)
        print("wrote", path)


if __name__ == "__main__":
    main()
