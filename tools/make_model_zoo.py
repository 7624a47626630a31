"""Exports small torchvision classifiers, transformers and sequence and image-to-image models with
random weights to ONNX as users export them (torch.onnx.export: the TorchScript exporter at opset
17, static or dynamic batch; names ending in _dynamo: the dynamo exporter at opset 18, weights in
external data) and stores an input and ONNX Runtime's CPU output for each: the fixtures of
tests/engine/model_zoo.rs.

    python3 tools/make_model_zoo.py OUT_DIR [NAME ...]   # then copy OUT_DIR/* to tests/fixtures/zoo/

Needs torch, torchvision, onnx and onnxruntime (the GPU machine has them). Deterministic: fixed
seeds. The models are narrowed (width multipliers, 10 classes) so that the fixtures stay small;
their graphs are what the full-size exports contain (shared initializers through Identity,
Constant nodes, HardSwish/HardSigmoid, squeeze-and-excitation, ceil-mode pooling).
"""
import os
import sys
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf


def efficientnet_b0_narrow():
    settings, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.34)
    return EfficientNet(settings, dropout=0.2, last_channel=last_channel, num_classes=10)


class FirstOutput(torch.nn.Module):
    """A transformers model returning only its first output (the importer takes one output)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, return_dict=False)[0]


def vit_tiny():
    from transformers import ViTConfig, ViTForImageClassification
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=10, attn_implementation="eager")
    return FirstOutput(ViTForImageClassification(config))


def bert_tiny():
    from transformers import BertConfig, BertModel
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, attn_implementation="eager")
    return FirstOutput(BertModel(config, add_pooling_layer=False))


def gpt2_tiny():
    from transformers import GPT2Config, GPT2Model
    config = GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=2, attn_implementation="eager")
    return FirstOutput(GPT2Model(config))


class SmallUNet(torch.nn.Module):
    """An image-to-image net: two levels, instance norms, a transposed-convolution up path and a
    bilinear one, skip connections by concatenation."""

    def __init__(self):
        super().__init__()
        block = lambda i, o: torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.InstanceNorm2d(o, affine=True), torch.nn.ReLU())
        self.down1, self.down2 = block(3, 8), block(8, 16)
        self.bottom = block(16, 16)
        self.up_transposed = torch.nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.up1 = block(32, 8)
        self.up_bilinear = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up2 = block(16, 8)
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(torch.nn.functional.max_pool2d(d1, 2))
        b = self.bottom(torch.nn.functional.max_pool2d(d2, 2))
        u1 = self.up1(torch.cat([self.up_transposed(b), d2], dim=1))
        u2 = self.up2(torch.cat([self.up_bilinear(u1), d1], dim=1))
        return self.head(u2)


class LstmClassifier(torch.nn.Module):
    """A sequence classifier reading the LSTM's output at the last step."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class GruClassifier(torch.nn.Module):
    """A sequence classifier reading the GRU's final hidden state."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(8, 24, batch_first=True)
        self.head = torch.nn.Linear(24, 5)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(h[-1])


class BidirectionalLstmClassifier(torch.nn.Module):
    """Two stacked bidirectional LSTM layers, read at the last step."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class BidirectionalGruClassifier(torch.nn.Module):
    """A bidirectional GRU, reading both directions' final hidden states."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(8, 12, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(24, 5)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(torch.cat([h[0], h[1]], dim=1))


class ResNet18Narrow(torchvision.models.resnet.ResNet):
    """ResNet-18's layout (torchvision's BasicBlocks, [2, 2, 2, 2], its stem and head) at an
    eighth of its width, so that the fixture stays small."""

    def __init__(self):
        from torchvision.models.resnet import BasicBlock
        super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=10)
        self.inplanes = 8
        self.conv1 = torch.nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.layer1 = self._make_layer(BasicBlock, 8, 2)
        self.layer2 = self._make_layer(BasicBlock, 16, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 32, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 64, 2, stride=2)
        self.fc = torch.nn.Linear(64, 10)


def regnet_y_narrow():
    """A RegNetY (grouped convolutions, squeeze-and-excitation) from torchvision's RegNet with a
    small design space."""
    from torchvision.models.regnet import BlockParams, RegNet
    params = BlockParams.from_init_params(depth=5, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=10, stem_width=8)


SEQUENCES = {"lstm_classifier", "gru_classifier", "lstm_bidirectional", "gru_bidirectional",
             "lstm_classifier_dynamo", "gru_classifier_dynamo"}

# Text models take token ids: [2, 8] ids below the vocabulary size.
TEXT = {"bert_tiny", "gpt2_tiny", "gpt2_tiny_dynamic_batch", "bert_tiny_dynamo", "gpt2_tiny_dynamo"}

MODELS = {
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5),
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(num_classes=10),
    "efficientnet_b0_narrow": efficientnet_b0_narrow,
    "shufflenet_v2_x0_5": lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
    "vit_tiny": vit_tiny,
    # Dynamic batch (the file's batch is symbolic; stored input of batch 3), and the dynamo
    # exporter (opset 18).
    "vit_tiny_dynamic_batch": vit_tiny,
    "mobilenet_v3_small_dynamo": lambda: torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5),
    "unet_small": SmallUNet,
    # Batch 1 or any other: the U-Net the render_target and web examples run on one image.
    "unet_small_dynamic_batch": SmallUNet,
    "lstm_classifier": LstmClassifier,
    "gru_classifier": GruClassifier,
    "bert_tiny": bert_tiny,
    "gpt2_tiny": gpt2_tiny,
    "gpt2_tiny_dynamic_batch": gpt2_tiny,
    "mobilenet_v2_narrow": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25),
    "resnet18_narrow": ResNet18Narrow,
    "regnet_y_narrow": regnet_y_narrow,
    "mnasnet_narrow": lambda: torchvision.models.MNASNet(alpha=0.25, num_classes=10),
    "lstm_bidirectional": BidirectionalLstmClassifier,
    "gru_bidirectional": BidirectionalGruClassifier,
    # The dynamo exporter (opset 18, external data) on the other families.
    "resnet18_narrow_dynamo": ResNet18Narrow,
    "vit_tiny_dynamo": vit_tiny,
    "bert_tiny_dynamo": bert_tiny,
    "gpt2_tiny_dynamo": gpt2_tiny,
    "unet_small_dynamo": SmallUNet,
    "lstm_classifier_dynamo": LstmClassifier,
    "gru_classifier_dynamo": GruClassifier,
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
        if isinstance(m, torch.nn.InstanceNorm2d) and m.affine:
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)


def main(out, only):
    os.makedirs(out, exist_ok=True)
    for name, build in MODELS.items():
        if only and name not in only:
            continue
        # Seeds from the name: each model's fixtures stay the same whatever else is listed.
        seed = zlib.crc32(name.encode())
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed + 1)
        model = build().eval()
        randomize_batch_norms(model, generator)
        if name in TEXT:
            x = torch.randint(0, 100, (2, 8), generator=generator)
        elif name in SEQUENCES:
            x = torch.randn(2, 10, 8, generator=generator)
        elif name.startswith("vit_tiny") and name != "vit_tiny_dynamic_batch":
            x = torch.rand(2, 3, 32, 32, generator=generator)
        elif name == "vit_tiny_dynamic_batch":
            x = torch.rand(3, 3, 32, 32, generator=generator)
        else:
            x = torch.rand(2, 3, 64, 64, generator=generator)
        path = os.path.join(out, f"{name}.onnx")
        try:
            if name.endswith("_dynamo"):
                torch.onnx.export(model, (x,), path, opset_version=18, dynamo=True, input_names=["input"], output_names=["logits"])
            elif name.endswith("_dynamic_batch"):
                torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            else:
                torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"], output_names=["logits"])
            onnx.checker.check_model(path)
        except Exception as error:  # one model's export failing leaves the others
            print(f"{name}: export failed: {str(error)[:400]}")
            continue
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        want = session.run(None, {"input": x.numpy()})[0].astype(np.float32)
        with torch.no_grad():
            torch_out = model(x).numpy()
        np.save(os.path.join(out, f"{name}_input.npy"), x.numpy().astype(np.float32))  # ids as floats: exact
        np.save(os.path.join(out, f"{name}_ort.npy"), want)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params} parameters, {os.path.getsize(path)} bytes, ops {ops}, "
              f"ORT vs torch max abs diff {np.abs(want - torch_out).max():.2e}, output range {want.min():.3f}..{want.max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
