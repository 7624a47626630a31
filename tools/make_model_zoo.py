"""Exports small torchvision classifiers with random weights to ONNX as users export them
(torch.onnx.export, TorchScript exporter, opset 17, static shapes) and stores an input and ONNX
Runtime's CPU output for each: the fixtures of tests/engine/model_zoo.rs.

    python3 tools/make_model_zoo.py OUT_DIR [NAME ...]   # then copy OUT_DIR/* to tests/fixtures/zoo/

Needs torch, torchvision, onnx and onnxruntime (the GPU machine has them). Deterministic: fixed
seeds. The models are narrowed (width multipliers, 10 classes) so that the fixtures stay small;
their graphs are what the full-size exports contain (shared initializers through Identity,
Constant nodes, HardSwish/HardSigmoid, squeeze-and-excitation, ceil-mode pooling).
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf


def efficientnet_b0_narrow():
    settings, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)
    return EfficientNet(settings, dropout=0.2, last_channel=last_channel, num_classes=10)


MODELS = {
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5),
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(num_classes=10),
    "efficientnet_b0_narrow": efficientnet_b0_narrow,
    "shufflenet_v2_x0_5": lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
}


def randomize_batch_norms(model, generator):
    """Random running statistics and affine parameters, so that no BatchNormalization is an identity."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)


def main(out, only):
    os.makedirs(out, exist_ok=True)
    for index, (name, build) in enumerate(MODELS.items()):
        if only and name not in only:
            continue
        torch.manual_seed(index)
        generator = torch.Generator().manual_seed(100 + index)
        model = build().eval()
        randomize_batch_norms(model, generator)
        x = torch.rand(2, 3, 64, 64, generator=generator)
        path = os.path.join(out, f"{name}.onnx")
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"], output_names=["logits"])
        onnx.checker.check_model(path)
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        want = session.run(None, {"input": x.numpy()})[0].astype(np.float32)
        with torch.no_grad():
            torch_out = model(x).numpy()
        np.save(os.path.join(out, f"{name}_input.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(out, f"{name}_ort.npy"), want)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params} parameters, {os.path.getsize(path)} bytes, ops {ops}, "
              f"ORT vs torch max abs diff {np.abs(want - torch_out).max():.2e}, output range {want.min():.3f}..{want.max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
