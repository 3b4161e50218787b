"""Hostile torch.export archives (.pt2), built from an honest one by editing its entries as
an attacker would: what `torch.export.load` reads can carry pickles, Python expressions for
sympy, operator names resolved by getattr, and a zip's own tricks."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tests.sandbox.hostile_models import Honest

Edit = Callable[[dict[str, bytes], str], None]


def save_program(module: torch.nn.Module, path: Path, *, dynamic: bool = True) -> Path:
    example = torch.zeros(2, 1, 96, 96)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    torch.export.save(torch.export.export(module.eval(), (example,), dynamic_shapes=shapes),
                      str(path))
    return path


def rewrite(source: Path, path: Path, edit: Edit) -> Path:
    """Copy `source` to `path` with `edit(entries, prefix)` applied to its entries."""
    with zipfile.ZipFile(source) as zf:
        entries = {info.filename: zf.read(info) for info in zf.infolist()}
    prefix = next(iter(entries)).split("/", 1)[0]
    edit(entries, prefix)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _program(entries: dict[str, bytes], prefix: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(entries[f"{prefix}/models/model.json"])
    return loaded


def _set_program(entries: dict[str, bytes], prefix: str, program: dict[str, Any]) -> None:
    entries[f"{prefix}/models/model.json"] = json.dumps(program).encode()


def _nodes(program: dict[str, Any]) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = program["graph_module"]["graph"]["nodes"]
    return nodes


def retarget(new_target: str) -> Edit:
    """The first operator of the graph renamed: the loader resolves it by getattr."""
    def edit(entries: dict[str, bytes], prefix: str) -> None:
        program = _program(entries, prefix)
        _nodes(program)[0]["target"] = new_target
        _set_program(entries, prefix, program)
    return edit


def sympy_payload(marker: Path) -> Edit:
    """A symbolic size whose text sympify would evaluate as Python."""
    code = f"__import__('os').system('touch {marker}')"

    def edit(entries: dict[str, bytes], prefix: str) -> None:
        raw = entries[f"{prefix}/models/model.json"].decode()
        assert "Symbol('s" in raw
        start = raw.index("Symbol('s")
        end = raw.index(")", start) + 1
        entries[f"{prefix}/models/model.json"] = raw.replace(raw[start:end], code).encode()
    return edit


class _Touch:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _torch_save_zip(obj: Any) -> bytes:
    """A torch.save-layout zip whose data.pkl is an arbitrary pickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


def pickled_sample_inputs(marker: Path) -> Edit:
    """The sample inputs replaced by a pickle that runs a command when loaded."""
    def edit(entries: dict[str, bytes], prefix: str) -> None:
        entries[f"{prefix}/data/sample_inputs/model.pt"] = _torch_save_zip(_Touch(str(marker)))
    return edit


def pickled_weight(marker: Path) -> Edit:
    """A weight marked use_pickle (loaded with weights_only=False) holding that pickle."""
    def edit(entries: dict[str, bytes], prefix: str) -> None:
        config_name = f"{prefix}/data/weights/model_weights_config.json"
        config = json.loads(entries[config_name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        entries[config_name] = json.dumps(config).encode()
        buffer = io.BytesIO()
        torch.save(torch.zeros(1), buffer)  # replaced below by the hostile pickle
        entries[f"{prefix}/data/weights/{first['path_name']}"] = _torch_save_zip(
            _Touch(str(marker))
        )
    return edit


def huge_declared_weight(entries: dict[str, bytes], prefix: str) -> None:
    """A weight that claims 2**40 elements over its few real bytes."""
    config_name = f"{prefix}/data/weights/model_weights_config.json"
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
    first["tensor_meta"]["strides"] = [{"as_int": 1 << 20}, {"as_int": 1}]
    entries[config_name] = json.dumps(config).encode()


def extra_entry(entries: dict[str, bytes], prefix: str) -> None:
    entries[f"{prefix}/extra/notes.txt"] = b"hello"


def write_pt2_bomb(path: Path) -> None:
    """A .pt2 layout whose model.json inflates 1000x from a deflated entry."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/archive_format", "pt2")
        zf.writestr("m/archive_version", "0")
        zf.writestr("m/models/model.json", b" " * (200 * 1024 * 1024))


class BigConstant(torch.nn.Module):
    """A 64 MiB constant: over the exercise's file size, refused before anything loads."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(16 * 1024 * 1024))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :30] + self.table[:30]


class HugeAllocation(torch.nn.Module):
    """A small file whose forward pass allocates 64 GiB: the sandbox's memory cap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(x.shape[0], 1 << 34)
        return x.flatten(1)[:, :30] + big[:, :30]


__all__ = ["Honest"]
