"""A zoo of the architectures students really write for the facial-keypoints exercise.

Rebuilt from what DESIGN.md's survey of public course repositories found: ReLU, ELU,
LeakyReLU, PReLU (one module shared by every layer, or per channel), SELU, GELU, Tanh and
Sigmoid; BatchNorm2d/1d heads (one with eps=250), LayerNorm, Dropout up to p=0.6 and up to six
of them; from ~2 MFLOP to ~4.6 GFLOP per image, kernels 1x1 to 15x15, strided and padded
pooling, adaptive pooling, fully-connected heads at the 20 MiB file limit; a model returning
(N, 15, 2), one that works only at batch 1, and one flattening with `x.view(-1, K)`.

Weights are random (from a seed) with non-trivial BatchNorm statistics: speed and fidelity do
not depend on training. `build(name)` gives the eval-mode module, `export(...)` the file a
student would upload (scripted, or traced where the entry says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

Act = Callable[[], nn.Module]


def _conv_stack(
    channels: list[int],
    *,
    kernels: list[int],
    act: Act,
    pool: Callable[[], nn.Module] | None = None,
    bn: bool = False,
    dropout: list[float] | None = None,
    stride: int = 1,
    padding: str | int = "same",
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        k = kernels[i]
        pad = k // 2 if padding == "same" else int(padding)
        layers.append(nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(act())
        if pool is not None:
            layers.append(pool())
        if dropout:
            layers.append(nn.Dropout(dropout[i]))
    return layers


def _head(sizes: list[int], *, act: Act, dropout: float = 0.0, bn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return layers


class Seq(nn.Module):
    """features -> head, the shape most notebooks have."""

    def __init__(self, features: list[nn.Module], head: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*features)
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def naimish(act: Act, width: int) -> nn.Module:
    """NaimishNet at 96x96: conv 32/64/128/256 with kernels 4/3/2/1, max-pool, dropout 0.1 to
    0.6, FC 6400 -> width -> width -> 30 (a 680-wide head is ~19 MB)."""
    features = _conv_stack(
        [1, 32, 64, 128, 256], kernels=[4, 3, 2, 1], act=act, pool=lambda: nn.MaxPool2d(2),
        dropout=[0.1, 0.2, 0.3, 0.4], padding=0,
    )
    head = [
        nn.Flatten(), nn.Linear(256 * 5 * 5, width), act(), nn.Dropout(0.5),
        nn.Linear(width, width), act(), nn.Dropout(0.6), nn.Linear(width, 30),
    ]
    return Seq(features, head)


class SharedPReLUStrided(nn.Module):
    """One PReLU module reused after every layer; stride-2 convs instead of pooling; ~19 MB."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.PReLU()
        self.c1 = nn.Conv2d(1, 32, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(256 * 6 * 6, 512)
        self.fc2 = nn.Linear(512, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(x))
        x = self.act(self.c2(x))
        x = self.act(self.c3(x))
        x = self.act(self.c4(x))
        x = self.act(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class PReLUPerChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in [(1, 16), (16, 32), (32, 64), (64, 128)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.PReLU(c_out), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 36, 256), nn.PReLU(256),
                                  nn.Linear(256, 30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                          nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.down(x) + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    """A stem, then stages of residual blocks, global average pooling and a linear head."""

    def __init__(self, stem: int, stages: list[tuple[int, int]], stem_stride: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(stem), nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c = stem
        for i, (width, count) in enumerate(stages):
            for j in range(count):
                blocks.append(Block(c, width, stride=2 if (j == 0 and i > 0) else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32),
                                   nn.ReLU6()]
        c = 32
        for c_out, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]:
            layers += [
                nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),
                nn.BatchNorm2d(c), nn.ReLU6(),
                nn.Conv2d(c, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(),
            ]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Returns15x2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _plain_cnn(nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).view(-1, 15, 2)


class BatchOneOnly(nn.Module):
    """`x.view(1, -1)`: works in the course's batch-1 loop only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(32 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).view(1, -1))))


class ViewMinusOne(nn.Module):
    """`x.view(-1, K)`: a wrong input size would become extra rows instead of an error."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(128 * 12 * 12, 256)
        self.fc2 = nn.Linear(256, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).view(-1, 128 * 12 * 12)
        return self.fc2(torch.relu(self.fc1(x)))


class OutputActivation(nn.Module):
    def __init__(self, body: nn.Module, out: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _plain_cnn(act: Act, *, bn: bool = False, width: int = 256) -> nn.Module:
    features = _conv_stack([1, 32, 64, 128], kernels=[3, 3, 3], act=act,
                           pool=lambda: nn.MaxPool2d(2), bn=bn)
    return Seq(features, _head([128 * 12 * 12, width, 30], act=act))


def _vgg() -> nn.Module:
    layers: list[nn.Module] = []
    c = 1
    for width in (32, 64, 128):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    return Seq(layers, _head([128 * 12 * 12, 256, 30], act=nn.ReLU, dropout=0.5))


def _layernorm_cnn() -> nn.Module:
    features = _conv_stack([1, 16, 32, 64], kernels=[5, 3, 3], act=nn.ReLU,
                           pool=lambda: nn.MaxPool2d(2))
    features.append(nn.LayerNorm([64, 12, 12]))
    head = [nn.Flatten(), nn.Linear(64 * 144, 256), nn.LayerNorm(256), nn.GELU(),
            nn.Linear(256, 30)]
    return Seq(features, head)


def _padded_pools() -> nn.Module:
    features = [
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1),
    ]
    return Seq(features, _head([128 * 13 * 13, 128, 30], act=nn.ReLU))


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Module]
    what: str
    trace: bool = False  # exported with torch.jit.trace instead of torch.jit.script


def _e(build: Callable[[], nn.Module], what: str, trace: bool = False) -> ZooEntry:
    return ZooEntry(build, what, trace)


ZOO: dict[str, ZooEntry] = {
    "tiny_cnn": _e(
        lambda: Seq([nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(4)],
                    [nn.Flatten(), nn.Linear(8 * 23 * 23, 30)]),
        "one conv, 8 channels: ~1.5 MFLOP"),
    "lenet": _e(
        lambda: Seq(_conv_stack([1, 6, 16], kernels=[5, 5], act=nn.ReLU,
                                pool=lambda: nn.MaxPool2d(2), padding=0),
                    _head([16 * 21 * 21, 120, 84, 30], act=nn.ReLU)),
        "LeNet-5 shape, valid convs"),
    "mlp_wide": _e(lambda: Seq([], _head([9216, 512, 256, 30], act=nn.ReLU)),
                   "MLP 9216-512-256-30, 19 MB"),
    "mlp_sigmoid": _e(lambda: Seq([], _head([9216, 256, 30], act=nn.Sigmoid)),
                      "MLP with sigmoid hidden layer"),
    "naimish_elu_680": _e(lambda: naimish(nn.ELU, 680), "NaimishNet, ELU, 680-wide FC, 19 MB"),
    "naimish_elu_688": _e(lambda: naimish(nn.ELU, 688), "NaimishNet, ELU, 688-wide FC, 20 MB"),
    "naimish_leaky": _e(lambda: naimish(nn.LeakyReLU, 500), "NaimishNet, LeakyReLU"),
    "naimish_tanh": _e(lambda: naimish(nn.Tanh, 500), "NaimishNet, tanh"),
    "shared_prelu_strided": _e(SharedPReLUStrided, "one PReLU shared by every layer, stride 2"),
    "prelu_per_channel": _e(PReLUPerChannel, "PReLU per channel"),
    "selu_cnn": _e(lambda: _plain_cnn(nn.SELU), "SELU"),
    "gelu_cnn": _e(lambda: _plain_cnn(nn.GELU), "GELU"),
    "sigmoid_cnn": _e(lambda: _plain_cnn(nn.Sigmoid), "sigmoid in every layer"),
    "relu_cnn": _e(lambda: _plain_cnn(nn.ReLU), "ReLU conv 32-64-128, FC 256"),
    "relu_cnn_traced": _e(lambda: _plain_cnn(nn.ReLU), "the same, traced", trace=True),
    "bn_cnn_fc1024": _e(
        lambda: Seq(_conv_stack([1, 32, 32, 32], kernels=[3, 3, 3], act=nn.ReLU, bn=True,
                                pool=lambda: nn.MaxPool2d(2)),
                    _head([32 * 144, 1024, 30], act=nn.ReLU)),
        "BN CNN, 32 channels, FC 1024"),
    "bn1d_head_eps250": _e(
        lambda: Seq(_conv_stack([1, 16, 32, 64], kernels=[3, 3, 3], act=nn.ReLU, bn=True,
                                pool=lambda: nn.MaxPool2d(2)),
                    [nn.Flatten(), nn.Linear(64 * 144, 512), nn.BatchNorm1d(512, eps=250.0),
                     nn.ReLU(), nn.Linear(512, 30)]),
        "BatchNorm1d head with eps=250"),
    "bn_elu_traced": _e(lambda: _plain_cnn(nn.ELU, bn=True), "BN + ELU, traced", trace=True),
    "dropout2d_cnn": _e(
        lambda: Seq(_conv_stack([1, 32, 64, 128], kernels=[5, 3, 3], act=nn.ReLU,
                                pool=lambda: nn.MaxPool2d(2))
                    + [nn.Dropout2d(0.25)],
                    _head([128 * 144, 256, 30], act=nn.ReLU, dropout=0.5)),
        "Dropout2d"),
    "six_dropouts": _e(
        lambda: Seq(_conv_stack([1, 32, 64, 128, 256], kernels=[3, 3, 3, 3], act=nn.ReLU,
                                pool=lambda: nn.MaxPool2d(2), dropout=[0.1, 0.2, 0.3, 0.4]),
                    _head([256 * 36, 256, 128, 30], act=nn.ReLU, dropout=0.6)),
        "six Dropout layers up to p=0.6"),
    "layernorm_gelu": _e(_layernorm_cnn, "LayerNorm on features and head, GELU"),
    "kernel7x7": _e(
        lambda: Seq(_conv_stack([1, 16, 32, 64], kernels=[7, 7, 7], act=nn.ReLU,
                                pool=lambda: nn.MaxPool2d(2)),
                    _head([64 * 144, 256, 30], act=nn.ReLU)),
        "7x7 kernels"),
    "kernel15x15": _e(
        lambda: Seq(_conv_stack([1, 8, 16], kernels=[15, 7], act=nn.ReLU,
                                pool=lambda: nn.MaxPool2d(4)),
                    _head([16 * 36, 128, 30], act=nn.ReLU)),
        "a 15x15 first kernel"),
    "kernel1x1_mix": _e(
        lambda: Seq(_conv_stack([1, 32, 64, 32, 64], kernels=[3, 1, 3, 1], act=nn.ReLU,
                                pool=None)
                    + [nn.AdaptiveAvgPool2d(6)],
                    _head([64 * 36, 128, 30], act=nn.ReLU)),
        "1x1 convs at full resolution, adaptive pooling"),
    "strided_no_pool": _e(
        lambda: Seq(_conv_stack([1, 24, 48, 96, 192], kernels=[5, 3, 3, 3], act=nn.ReLU,
                                stride=2, bn=True),
                    _head([192 * 36, 256, 30], act=nn.ReLU)),
        "strided convs and BN, no pooling"),
    "padded_pools": _e(_padded_pools, "padded max-pool, average pool"),
    "vgg_small": _e(_vgg, "VGG blocks 32-64-128, 2 convs each"),
    "depthwise_separable": _e(DepthwiseSeparable, "MobileNet-like, ReLU6, adaptive pooling"),
    "residual_small": _e(lambda: ResNet(16, [(16, 2), (32, 2), (64, 2)]),
                         "6 residual blocks, 16-64 channels"),
    "resnet18_deep": _e(lambda: ResNet(64, [(64, 6), (128, 6), (128, 6)]),
                        "18 residual blocks, ~4.6 GFLOP"),
    "leaky_output": _e(lambda: OutputActivation(_plain_cnn(nn.LeakyReLU), nn.LeakyReLU(0.1)),
                       "LeakyReLU, also on the output"),
    "tanh_output": _e(lambda: OutputActivation(_plain_cnn(nn.ReLU, bn=True), nn.Tanh()),
                      "BN CNN ending in tanh"),
    "hardtanh_relu6": _e(lambda: OutputActivation(_plain_cnn(nn.ReLU6), nn.Hardtanh()),
                         "ReLU6, Hardtanh on the output"),
    "returns_15x2": _e(Returns15x2, "returns (N, 15, 2)"),
    "batch1_only": _e(BatchOneOnly, "x.view(1, -1): batch 1 only"),
    "view_minus1": _e(ViewMinusOne, "flattens with x.view(-1, K)"),
}


def _randomise_norms(module: nn.Module, generator: torch.Generator) -> None:
    # Fresh BatchNorm is the identity in eval mode; real running statistics exercise folding.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ZOO[name].build()
    _randomise_norms(model, torch.Generator().manual_seed(seed))
    return model.eval()


def export(name: str, path: Path, *, seed: int = 0) -> Path:
    """The file a student would upload for zoo entry `name`."""
    import warnings

    model = build(name, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if ZOO[name].trace:
            scripted = torch.jit.trace(model, torch.zeros(1, 1, 96, 96))
        else:
            scripted = torch.jit.script(model)
    scripted.save(str(path))
    return path


def export_program(
    name: str, path: Path, *, seed: int = 0, batch: int | None = None, train: bool = False
) -> Path:
    """The .pt2 a student would upload for zoo entry `name`: torch.export with a dynamic
    batch (1..1024), or a fixed `batch`; `train` exports it in training mode by mistake."""
    model = build(name, seed)
    if train:
        model.train()
    example = torch.zeros(batch or 2, 1, 96, 96)
    dynamic = None if batch else {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def mflop_per_image(model: nn.Module) -> float:
    """Multiply-adds x 2 of the convolutions and linear layers, for one 96x96 image."""
    total = 0

    def conv_hook(m: nn.Conv2d, _: object, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k

    def linear_hook(m: nn.Linear, _: object, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(torch.zeros(1, 1, 96, 96))
    for h in handles:
        h.remove()
    return total / 1e6
