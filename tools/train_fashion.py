"""Trains the shipped MobileNetV2-style Fashion-MNIST classifier and exports it to ONNX.

    python3 tools/train_fashion.py --out assets/models/fashion_mobilenetv2.onnx

Runs on CUDA when available (minutes on an H100), else on the CPU (slowly). The exported model
takes raw pixels in [0, 1] as float32 [N, 1, 28, 28] (normalisation is inside the graph as Mul and
Add) and returns logits [N, 10].
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist  # noqa: E402

MEAN, STD = 0.2860, 0.3530


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class FashionMobileNetV2(nn.Module):
    # (expansion, channels, repeats, first stride): 28x28 -> 28 -> 14 -> 7
    CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1)]

    def __init__(self, num_classes=10, last_channels=512):
        super().__init__()
        layers = [conv_bn(1, 32, 3)]
        cin = 32
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x):
        x = x * (1.0 / STD) + (-MEAN / STD)
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(self.dropout(x))


def augment(x):
    """Random 2-pixel shift (zero padded) and horizontal flip, on the device."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), device=x.device)
    dy = torch.randint(0, 5, (n,), device=x.device)
    idx = torch.arange(28, device=x.device)
    rows = (dy[:, None] + idx[None, :])[:, :, None].expand(n, 28, 28)
    cols = (dx[:, None] + idx[None, :])[:, None, :].expand(n, 28, 28)
    out = padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(n, device=x.device) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="folder with the IDX .gz files")
    p.add_argument("--out", default="assets/models/fashion_mobilenetv2.onnx")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    xtr, ytr = fashion_mnist.load("train", args.data)
    xte, yte = fashion_mnist.load("t10k", args.data)
    to_t = lambda a: torch.tensor(a, dtype=torch.float32, device=device).unsqueeze(1) / 255.0
    xtr, xte = to_t(xtr), to_t(xte)
    ytr = torch.tensor(ytr, dtype=torch.long, device=device)
    yte = torch.tensor(yte, dtype=torch.long, device=device)

    model = FashionMobileNetV2().to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps = args.epochs * (len(xtr) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), device=device)
        for i in range(len(xtr) // args.batch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = F.cross_entropy(model(augment(xtr[idx])), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.4f} test top-1 {acc:.2f}% ({time.time() - start:.0f}s)", flush=True)

    model = model.cpu().eval()
    dummy = torch.zeros(1, 1, 28, 28)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    export(model, dummy, args.out)
    with open(os.path.splitext(args.out)[0] + ".train.json", "w") as f:
        json.dump({"torch_test_top1": acc, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
                   "seed": args.seed, "device": device, "torch": torch.__version__,
                   "seconds": round(time.time() - start)}, f, indent=1)
    print(f"exported {args.out}; torch test top-1 {acc:.2f}%")


def export(model, dummy, path, opset=13):
    """Exports with the TorchScript-based exporter (classic ONNX ops, dynamic batch)."""
    torch.onnx.export(model, dummy, path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=opset, do_constant_folding=True, dynamo=False)
    import onnx
    graph = onnx.load(path).graph
    print(f"{path}: opset {opset}, {len(graph.node)} nodes:", sorted({n.op_type for n in graph.node}))


if __name__ == "__main__":
    main()
