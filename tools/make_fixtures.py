"""Writes the test fixtures: ONNX Runtime (CPU) outputs for the shipped and synthetic models, an
"op zoo" model that uses every supported operator, sample PNGs, and the model card numbers.

    python3 tools/make_fixtures.py

Needs numpy, onnx, onnxruntime and pillow (pip). Deterministic: fixed seeds throughout.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
MODELS = os.path.join(ROOT, "assets", "models")


def run(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)


def op_zoo(path):
    """A small graph touching every supported op, with BatchNormalization left standalone.

    Valid for batch 2 only: the tail reshapes across the batch dimension on purpose."""
    rng = np.random.default_rng(7)
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    f = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", const("w1", f(8, 3, 3, 3))], ["c1"], name="conv_nobias_pad",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", const("g", f(8) + 1), const("b", f(8)),
                         const("m", f(8)), const("v", np.abs(f(8)) + 0.5)], ["bn"], name="bn_standalone_after_relu_input"),
        helper.make_node("LeakyRelu", ["bn"], ["lr"], name="leaky", alpha=0.1),
        helper.make_node("Conv", ["lr", const("w2", f(8, 2, 3, 3)), const("b2", f(8))], ["c2"], name="grouped",
                         group=4, pads=[1, 0, 1, 2]),
        helper.make_node("HardSwish", ["c2"], ["hs"], name="hswish"),
        helper.make_node("Conv", ["hs", const("w3", f(8, 1, 3, 3)), const("b3", f(8))], ["c3"], name="depthwise",
                         group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c3"], ["sg"], name="sigmoid"),
        helper.make_node("Mul", ["sg", const("chan", f(1, 8, 1, 1))], ["mc"], name="mul_per_channel"),
        helper.make_node("Add", ["mc", "hs"], ["res"], name="residual"),
        helper.make_node("Relu", ["bn"], ["bn_relu"], name="relu"),
        helper.make_node("BatchNormalization", ["bn_relu", const("g2", f(8) + 1), const("b22", f(8)),
                         const("m2", f(8)), const("v2", np.abs(f(8)) + 0.5)], ["bn2"], name="bn_standalone"),
        helper.make_node("Concat", ["res", "bn2"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["mp"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=1),
        helper.make_node("HardSigmoid", ["ap"], ["hsg"], name="hsigmoid", alpha=0.3, beta=0.4),
        helper.make_node("Clip", ["mp", const("lo", np.array(-0.5, np.float32)), const("hi", np.array(1.5, np.float32))],
                         ["clip"], name="clip_inputs"),
        helper.make_node("Add", ["clip", "hsg"], ["pools"], name="add_same"),
        helper.make_node("Mul", ["pools", const("two", np.array(2.0, np.float32))], ["scaled"], name="mul_scalar"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Dropout", ["flat"], ["drop"], name="dropout"),
        helper.make_node("Gemm", [const("wT", f(16, 12)), "drop", const("gc", f(12, 1))], ["gemm_t"], name="gemm_transA_transB",
                         transA=1, transB=1, alpha=0.7, beta=1.3),
        helper.make_node("Identity", ["gemm_t"], ["ident"], name="identity"),
        helper.make_node("Reshape", ["ident", const("shape", np.array([3, 4, -1], np.int64))], ["r3"], name="reshape"),
        helper.make_node("MatMul", ["r3", const("mm", f(2, 5))], ["mmo"], name="matmul_batched"),
        helper.make_node("Softmax", ["mmo"], ["sm"], name="softmax", axis=1),
        helper.make_node("Reshape", ["sm", const("shape2", np.array([-1, 15], np.int64))], ["r2"], name="reshape2"),
        helper.make_node("Gemm", ["r2", const("w5", f(15, 6))], ["gemm"], name="gemm_plain"),
        helper.make_node("Clip", ["gemm"], ["y"], name="clip_attrs_absent_is_identity"),
    ]
    graph = helper.make_graph(nodes, "op_zoo",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 13, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    os.makedirs(FIX, exist_ok=True)
    rng = np.random.default_rng(2024)

    images, labels = fashion_mnist.load("t10k")
    x = (images[:, None].astype(np.float32) / 255.0)
    fashion = os.path.join(MODELS, "fashion_mobilenetv2.onnx")
    np.save(os.path.join(FIX, "fashion_input.npy"), x[:64])
    np.save(os.path.join(FIX, "fashion_labels.npy"), labels[:64].astype(np.int64))
    np.save(os.path.join(FIX, "fashion_ort.npy"), run(fashion, x[:64]))
    logits = np.concatenate([run(fashion, x[i:i + 1000]) for i in range(0, len(x), 1000)])
    acc = float((logits.argmax(1) == labels).mean() * 100)
    with open(os.path.join(MODELS, "fashion_mobilenetv2.ort.json"), "w") as f:
        json.dump({"ort_test_top1": round(acc, 2), "onnxruntime": ort.__version__, "test_images": len(x)}, f, indent=1)
    print(f"fashion: ONNX Runtime top-1 on the 10k test set: {acc:.2f}%")

    os.makedirs(os.path.join(ROOT, "assets", "images"), exist_ok=True)
    for cls, name in enumerate(fashion_mnist.CLASSES):
        idx = int(np.argmax(labels == cls))
        slug = name.lower().replace("/", "_").replace(" ", "_").replace("-", "_")
        Image.fromarray(images[idx]).save(os.path.join(ROOT, "assets", "images", f"{slug}.png"))

    for name, shape in [("cifar", (2, 3, 32, 32)), ("imagenet", (1, 3, 224, 224))]:
        path = os.path.join(MODELS, f"mobilenetv2_{name}_synthetic.onnx")
        inp = rng.uniform(-1, 1, shape).astype(np.float32)
        np.save(os.path.join(FIX, f"{name}_input.npy"), inp)
        np.save(os.path.join(FIX, f"{name}_ort.npy"), run(path, inp))
        print("wrote", name)

    zoo = os.path.join(FIX, "op_zoo.onnx")
    op_zoo(zoo)
    inp = rng.normal(0, 1, (2, 3, 13, 11)).astype(np.float32)
    np.save(os.path.join(FIX, "op_zoo_input.npy"), inp)
    np.save(os.path.join(FIX, "op_zoo_ort.npy"), run(zoo, inp))
    print("wrote op zoo", run(zoo, inp).shape)


if __name__ == "__main__":
    main()
