#!/usr/bin/env python3
"""Generate small ONNX and TorchScript models (deterministic weights from a seed).

Nothing is downloaded: ONNX graphs are built with onnx.helper, TorchScript
models with torch.jit from modules defined here. Tests import the functions;
the command line writes a model repository:

    python scripts/gen_example_models.py OUT_DIR [--seed 0] [--models a,b] [--no-config]

Models (folder name: what it is):
  onnx_dense      Y = relu(X @ W + B), X [-1, 8] FP32 -> Y [-1, 4]; batches (max_batch_size 8)
  onnx_add_sub    OUTPUT0/1 = INPUT0 +/- INPUT1, fixed [4] FP32, no batching
  torch_mlp       TorchScript MLP, INPUT__0 [-1, 8] -> OUTPUT__0 [-1, 4]; batches
  torch_named     TorchScript forward(a, b) -> (a + b, a * b), named inputs, no batching
  torch_resnet18  ResNet-18-sized CNN, INPUT__0 [-1, 3, 224, 224] -> OUTPUT__0 [-1, 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import numpy as np

# -- ONNX ------------------------------------------------------------------------


def dense_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    return w, b


def write_onnx_dense(path: str, seed: int = 0) -> None:
    """Y = relu(X @ W + B) with a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = dense_weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Z"]),
            helper.make_node("Relu", ["Z"], ["Y"]),
        ],
        "dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    _save_onnx(onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def write_onnx_add_sub(path: str, seed: int = 0) -> None:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 over fixed [4] tensors."""
    import onnx
    from onnx import TensorProto, helper

    del seed  # no weights
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("OUTPUT0", "OUTPUT1")],
    )
    _save_onnx(onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _save_onnx(onnx, model, path: str) -> None:  # noqa: ANN001 - onnx is a module
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    onnx.save(model, path)


# -- TorchScript -------------------------------------------------------------------


def _torch_modules():  # noqa: ANN202 - classes built lazily so torch loads only when needed
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    class Named(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, a * b

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            layers = []
            cin = 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    return torch, MLP, Named, ResNet18


def write_torch_mlp(path: str, seed: int = 0) -> None:
    torch, MLP, _, _ = _torch_modules()
    torch.manual_seed(seed)
    module = MLP().eval()
    traced = torch.jit.trace(module, torch.zeros(1, 8))
    _save_torch(torch, traced, path)


def write_torch_named(path: str, seed: int = 0) -> None:
    torch, _, Named, _ = _torch_modules()
    del seed  # no weights
    _save_torch(torch, torch.jit.script(Named()), path)


def write_torch_resnet18(path: str, seed: int = 0) -> None:
    torch, _, _, ResNet18 = _torch_modules()
    torch.manual_seed(seed)
    module = ResNet18().eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(1, 3, 224, 224))
    _save_torch(torch, traced, path)


def _save_torch(torch, module, path: str) -> None:  # noqa: ANN001
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.jit.save(module, path)


# -- repository layout -----------------------------------------------------------

CONFIGS: dict[str, str] = {
    "onnx_dense": """backend: "onnxruntime"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [8] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_CPU }]
""",
    "onnx_add_sub": """platform: "onnxruntime_onnx"
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [4] },
       { name: "INPUT1" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] },
        { name: "OUTPUT1" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_CPU }]
""",
    "torch_mlp": """backend: "pytorch"
max_batch_size: 8
input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [8] }]
output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_CPU }]
parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }
""",
    "torch_named": """platform: "pytorch_libtorch"
input [{ name: "a" data_type: TYPE_FP32 dims: [3] },
       { name: "b" data_type: TYPE_FP32 dims: [3] }]
output [{ name: "SUM__0" data_type: TYPE_FP32 dims: [3] },
        { name: "PRODUCT__1" data_type: TYPE_FP32 dims: [3] }]
instance_group [{ count: 1 kind: KIND_CPU }]
""",
    "torch_resnet18": """backend: "pytorch"
max_batch_size: 32
input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [3, 224, 224] }]
output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [1000] }]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [{ count: 1 kind: KIND_GPU }]
""",
}

WRITERS: dict[str, tuple[str, Callable[[str, int], None]]] = {
    "onnx_dense": ("model.onnx", write_onnx_dense),
    "onnx_add_sub": ("model.onnx", write_onnx_add_sub),
    "torch_mlp": ("model.pt", write_torch_mlp),
    "torch_named": ("model.pt", write_torch_named),
    "torch_resnet18": ("model.pt", write_torch_resnet18),
}


def write_model(
    repo: str, name: str, seed: int = 0, *, config: str | None = "", folder: str | None = None
) -> str:
    """Write <repo>/<folder or name>/1/<file> (+ config.pbtxt unless config is None).

    config="" writes the bundled config; any other text is written as given.
    Returns the model file's path.
    """
    filename, writer = WRITERS[name]
    model_dir = os.path.join(repo, folder or name)
    path = os.path.join(model_dir, "1", filename)
    writer(path, seed)
    if config is not None:
        with open(os.path.join(model_dir, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config or CONFIGS[name])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="model repository folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", default="onnx_dense,onnx_add_sub,torch_mlp,torch_named",
        help="comma-separated names: " + ", ".join(WRITERS),
    )
    parser.add_argument("--no-config", action="store_true", help="leave config.pbtxt out")
    ns = parser.parse_args(argv)
    for name in [n.strip() for n in ns.models.split(",") if n.strip()]:
        if name not in WRITERS:
            print(f"unknown model '{name}'", file=sys.stderr)
            return 2
        path = write_model(ns.out, name, ns.seed, config=None if ns.no_config else "")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
