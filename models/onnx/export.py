"""Builds and exports veil's ONNX test models with their reference outputs.

Each model is also exported with the default (dynamo) exporter to `models/onnx/dynamo/NAME.onnx` (weights
in `NAME.onnx.data` beside it); both exports share `NAME.json`.

Run by hand (CI has no torch): `python models/onnx/export.py` from the repository root, in an environment
with `torch` and `onnx`. Writes, for each model NAME, `models/onnx/NAME.onnx` and `models/onnx/NAME.json`
(`{"input_shape", "input", "output_shape", "output"}`, flat row-major f32 lists: a fixed input and
PyTorch's output for it). Fixed seeds: rerunning gives the same weights and inputs.

- `cnn`: Conv -> AveragePool -> Sigmoid -> Conv (groups) -> Relu -> Flatten -> Gemm.
- `resnet`: a residual block with BatchNormalization left in the graph (constant folding off), MaxPool,
  GlobalAveragePool and a final Gemm.
- `misc`: LeakyRelu, Tanh, Concat, Slice, a product of two activations, Sub, Transpose, MaxPool with
  padding, ReduceMean over two axes.
- `cnn_dynamic_batch`: `cnn` with a dynamic batch dimension (shares `cnn.json`).
- `dynamo/torch_encoder`: PyTorch's own nn.TransformerEncoderLayer (default exporter only).
- `unsupported`: a Cos, which veil does not run: the named-error test.
- `big_cnn`: a CNN of real size (0.8 MB: two Conv/Relu/MaxPool blocks, Gemm 784->256, Relu, Gemm) for
  the network path's model files (classic exporter only); `python models/onnx/export.py big_cnn` makes
  only it.
- `encoder`: one transformer encoder layer (two-head self-attention, LayerNorm, GELU as erf) and the mean
  over tokens.
"""

import json
import math
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, groups=2)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        x = torch.sigmoid(self.pool(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class Resnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(x + y)
        x = self.pool(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        # A shape-only subgraph (Shape, Gather, Unsqueeze, Concat) that import folds: shapes are public.
        x = x.reshape(x.shape[0], -1)
        return self.fc(x)


class Encoder(nn.Module):
    def __init__(self, d=8, heads=2, ff=16):
        super().__init__()
        self.d, self.heads = d, heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x):
        t, d, h = x.shape[1], self.d, self.heads
        hs = d // h
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(1, t, h, hs).transpose(1, 2)
        k = k.reshape(1, t, h, hs).transpose(1, 2)
        v = v.reshape(1, t, h, hs).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hs)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(1, t, d)
        x = self.norm1(x + self.out(ctx))
        x = self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x))))
        return x.mean(dim=1)


class Misc(nn.Module):
    """LeakyRelu, Tanh, Concat, Slice, a product of two activations, Sub, Transpose, MaxPool with padding and
    ReduceMean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        a = torch.tanh(self.conv(nn.functional.leaky_relu(x, 0.1)))
        b = torch.cat([a, torch.relu(x)], dim=1)[:, 1:3]
        y = (b * a - x * 0.5).transpose(2, 3)
        y = nn.functional.max_pool2d(y, 3, stride=2, padding=1)
        return y.mean(dim=(2, 3))


class BigCnn(nn.Module):
    """A CNN of real size for the network path (about 0.8 MB of weights, over the old 32 KiB manifest
    limit): two Conv+Relu+MaxPool blocks on a 28x28 image, then Gemm 784->256, Relu, Gemm 256->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class Unsupported(nn.Module):
    """A cosine: no private implementation, for the error test."""

    def forward(self, x):
        return torch.cos(x) + 1.0


def export(name, model, shape, seed, constant_folding=True, dynamo=True):
    torch.manual_seed(seed)
    x = torch.randn(*shape)
    model.eval()
    with torch.no_grad():
        y = model(x)
    path = os.path.join(HERE, f"{name}.onnx")
    torch.onnx.export(
        model,
        (x,),
        path,
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        do_constant_folding=constant_folding,
        dynamo=False,
    )
    # The CNN once more with a dynamic batch dimension (veil fixes it to 1).
    if name == "cnn":
        torch.onnx.export(
            model,
            (x,),
            os.path.join(HERE, "cnn_dynamic_batch.onnx"),
            input_names=["input"],
            output_names=["output"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    # The same model with the default (dynamo) exporter, as someone else would export it: opset 20, the
    # weights in an external data file beside it (`dynamo/NAME.onnx.data`), GELU as one Gelu node.
    if dynamo and name != "unsupported":
        os.makedirs(os.path.join(HERE, "dynamo"), exist_ok=True)
        torch.onnx.export(
            model,
            (x,),
            os.path.join(HERE, "dynamo", f"{name}.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamo=True,
        )
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(
            {
                "input_shape": list(x.shape),
                "input": [round(v, 7) for v in x.flatten().tolist()],
                "output_shape": list(y.shape),
                "output": [round(v, 7) for v in y.flatten().tolist()],
            },
            f,
            indent=1,
        )
        f.write("\n")


class TorchEncoder(nn.Module):
    """PyTorch's own nn.TransformerEncoderLayer (GELU, no dropout) and the mean over tokens."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True
        )

    def forward(self, x):
        return self.layer(x).mean(dim=1)


def export_dynamo_only(name, model, shape, seed):
    """A model only the default (dynamo) exporter writes in a form onnx-ir types statically (the classic
    exporter computes nn.MultiheadAttention's reshapes from Shape at run time)."""
    torch.manual_seed(seed)
    x = torch.randn(*shape)
    model.eval()
    with torch.no_grad():
        y = model(x)
    os.makedirs(os.path.join(HERE, "dynamo"), exist_ok=True)
    torch.onnx.export(
        model,
        (x,),
        os.path.join(HERE, "dynamo", f"{name}.onnx"),
        input_names=["input"],
        output_names=["output"],
        dynamo=True,
    )
    with open(os.path.join(HERE, "dynamo", f"{name}.json"), "w") as f:
        json.dump(
            {
                "input_shape": list(x.shape),
                "input": [round(v, 7) for v in x.flatten().tolist()],
                "output_shape": list(y.shape),
                "output": [round(v, 7) for v in y.flatten().tolist()],
            },
            f,
            indent=1,
        )
        f.write("\n")


def export_big_cnn():
    torch.manual_seed(6)
    export("big_cnn", BigCnn(), (1, 1, 28, 28), 17, dynamo=False)


def main():
    if sys.argv[1:] == ["big_cnn"]:
        # Only the big model (the others unchanged).
        export_big_cnn()
        return
    torch.manual_seed(1)
    export("cnn", Cnn(), (1, 1, 8, 8), 11)
    torch.manual_seed(2)
    resnet = Resnet()
    # Non-trivial running statistics, so folding BatchNormalization is tested.
    with torch.no_grad():
        for bn in (resnet.bn0, resnet.bn1, resnet.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    export("resnet", resnet, (1, 2, 6, 6), 12, constant_folding=False)
    torch.manual_seed(3)
    export("encoder", Encoder(), (1, 4, 8), 13)
    torch.manual_seed(4)
    export("misc", Misc(), (1, 2, 3, 3), 14)
    export("unsupported", Unsupported(), (1, 4), 15)
    torch.manual_seed(5)
    export_dynamo_only("torch_encoder", TorchEncoder(), (1, 4, 8), 16)
    export_big_cnn()


if __name__ == "__main__":
    main()
