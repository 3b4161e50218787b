"""Structural checks of a torch.export archive (".pt2") before torch sees it.

`torch.export.load` can run code while it reads a file, in three places, all checked here:
  - pickles: weights and constants marked `use_pickle` are read with
    `torch.load(weights_only=False)`, torchbind objects with `pickle.loads`, and the sample
    inputs with `torch.load`, which falls back to `weights_only=False` when the safe loader
    refuses. Only the sample inputs may be a pickle, and only one that rebuilds plain tensors.
  - symbolic shapes: every `expr_str` goes through `sympy.sympify`, which is `eval`. Only
    arithmetic on shape symbols is let through.
  - operator names: a node's target is resolved by `getattr` from `torch`, `math` or
    `operator`, so "torch.load" or "torch.from_file" would name a real function. Only ATen
    operators (without the file ones), `operator` and `math` functions and torch's symbolic
    shape helpers are allowed: no custom operators, no higher-order operators.
The sandbox child loads the program under its confinement anyway (and with torch's safe
unpickler forced); these checks refuse a hostile file with a clear reason at upload. Importable
without torch.
"""

from __future__ import annotations

import json
import pickletools
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from grader.grading.failures import FailureKind, GradingFailure

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_SAMPLE_INPUTS_BYTES = 64 * 1024 * 1024
MAX_NODES = 200_000
_PROGRAM = "model"  # torch.export.save's name for the one program; load() returns only it

# File operators: reading or writing files is never part of a model's forward pass.
FILE_OPS = frozenset({"from_file", "save", "load", "_load", "_save", "to_file"})
_ATEN = re.compile(r"^torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)$")
_OTHER_TARGETS = re.compile(
    r"^(_operator\.[a-z_]+|math\.[a-z_]+|torch\.(sym_(int|float|max|min|not|ite|sqrt|sum)"
    r"|_sym_sqrt|_assert|_check|_check_is_size|_assert_scalar))$"
)
# What sympify may see: shape symbols (s0, u3), integers, arithmetic, and torch's sympy
# function names (FloorDiv, Mod, Max, ...): letters only in identifiers of that form.
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%(),. <>=!']{1,2000}$")
_EXPR_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL = re.compile(r"^[a-z]{1,2}\d+$")
_SYMPY_FUNCTIONS = frozenset({
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "LShift", "RShift",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural",
    "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Le", "Lt", "Ge", "Gt", "And", "Or", "Not",
    "True", "False", "oo", "Integer", "Rational", "Float", "OpaqueUnaryFn_sqrt",
    # Symbol('s77', positive=True, integer=True): how a symbolic input size is written.
    "Symbol", "positive", "integer", "nonnegative", "real",
})
# torch.save of the sample inputs (protocol 2): rebuilding tensors and a dict, nothing else.
_SAFE_GLOBALS = frozenset({
    "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_tensor_v3",
    "torch._utils _rebuild_parameter", "collections OrderedDict", "torch device",
    "torch.serialization _get_layout",
}) | {
    f"torch {dtype}Storage"
    for dtype in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                  "Byte", "Bool")
}
_UNSAFE_OPCODES = frozenset({"STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1",
                             "EXT2", "EXT4"})
_FIXED = ("archive_format", "archive_version", "byteorder", ".data/version",
          ".data/serialization_id", ".data/.format_version", ".data/.storage_alignment")


def _refuse(reason: str) -> GradingFailure:
    return GradingFailure(FailureKind.LOAD_ERROR, f"{reason}: refused as an exported program")


def check_pt2_contents(zf: zipfile.ZipFile, prefix: str) -> None:
    """Raise LOAD_ERROR unless the archive holds exactly one exported program whose loading
    can run nothing but torch's own tensor reconstruction. The zip's sizes are checked
    already (archive.py), so every entry read here has a bounded size."""
    names = set(zf.namelist())
    inner = {n[len(prefix) + 1 :] for n in names}
    if _read(zf, f"{prefix}/archive_format", 64).strip() != b"pt2":
        raise _refuse("the archive_format entry is missing or does not say pt2")
    program = f"models/{_PROGRAM}.json"
    if program not in inner:
        raise _refuse(f"no {program} inside (an AOTInductor package or another program?)")
    weights = _payload_names(zf, prefix, "weights", f"data/weights/{_PROGRAM}_weights_config.json")
    constants = _payload_names(
        zf, prefix, "constants", f"data/constants/{_PROGRAM}_constants_config.json"
    )
    allowed = {
        *_FIXED, program, f"data/sample_inputs/{_PROGRAM}.pt",
        f"data/weights/{_PROGRAM}_weights_config.json",
        f"data/constants/{_PROGRAM}_constants_config.json",
        *(f"data/weights/{w}" for w in weights), *(f"data/constants/{c}" for c in constants),
    }
    unexpected = sorted(inner - allowed)
    if unexpected:
        raise _refuse(f"unexpected entry {prefix}/{unexpected[0]}")
    missing = sorted(f"data/weights/{w}" for w in weights if f"data/weights/{w}" not in inner)
    missing += sorted(f"data/constants/{c}" for c in constants
                      if f"data/constants/{c}" not in inner)
    if missing:
        raise _refuse(f"{prefix}/{missing[0]} is listed but missing")
    _check_program(_json(zf, f"{prefix}/{program}"))
    sample = f"{prefix}/data/sample_inputs/{_PROGRAM}.pt"
    if sample in names:
        _check_sample_inputs(_read(zf, sample, MAX_SAMPLE_INPUTS_BYTES))


def program_versions(zf: zipfile.ZipFile, prefix: str) -> dict[str, Any]:
    """What the archive says wrote it: torch version, export schema version, archive version
    (for a clear message when this server's torch cannot read it)."""
    raw = _json(zf, f"{prefix}/models/{_PROGRAM}.json")
    schema = raw.get("schema_version") if isinstance(raw, dict) else None
    archive = _read(zf, f"{prefix}/archive_version", 64).decode("ascii", "replace").strip()
    return {
        "torch": str(raw.get("torch_version", "?"))[:40] if isinstance(raw, dict) else "?",
        "schema": (schema.get("major"), schema.get("minor")) if isinstance(schema, dict) else None,
        "archive": archive,
    }


def _read(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _refuse(f"{name} is missing") from None
    if info.file_size > limit:
        raise _refuse(f"{name} is {info.file_size} bytes, at most {limit} allowed")
    with zf.open(info) as fh:
        return fh.read(limit + 1)[:limit]


def _json(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(_read(zf, name, MAX_JSON_BYTES))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse(f"{name} is not valid JSON") from None


def _payload_names(zf: zipfile.ZipFile, prefix: str, what: str, config: str) -> set[str]:
    """The payload files a weights/constants config names; none may be a pickle."""
    if f"{prefix}/{config}" not in zf.namelist():
        return set()
    raw = _json(zf, f"{prefix}/{config}")
    entries = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(f"{config} has no config table")
    files = set()
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise _refuse(f"{config}: entry {str(fqn)[:80]!r} is malformed")
        if meta.get("use_pickle") is not False:
            raise _refuse(
                f"{what} {str(fqn)[:80]!r} is stored as a pickle (a tensor subclass or a "
                "Python object), which could run code when loaded"
            )
        path = meta.get("path_name")
        if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,200}", path) \
                or path.startswith("."):
            raise _refuse(f"{config}: {what} {str(fqn)[:80]!r} has an unsafe file name")
        files.add(path)
    return files


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_program(raw: Any) -> None:
    if not isinstance(raw, dict) or not isinstance(raw.get("graph_module"), dict):
        raise _refuse("models/model.json is not an exported program")
    nodes = 0
    for obj in _walk(raw):
        target = obj.get("target")
        if isinstance(target, str) and "inputs" in obj and "outputs" in obj:
            nodes += 1
            _check_target(target)
        expr = obj.get("expr_str")
        if expr is not None:
            _check_expr(expr)
        custom = obj.get("custom_obj_values")
        if custom:
            raise _refuse("the program holds script objects (torchbind), loaded by pickle")
    if nodes > MAX_NODES:
        raise _refuse(f"{nodes} operators, at most {MAX_NODES} allowed")
    for key, value in (raw.get("range_constraints") or {}).items():
        _check_expr(key)
        if not isinstance(value, dict):
            raise _refuse("a range constraint is malformed")


def _check_target(target: str) -> None:
    if match := _ATEN.match(target):
        if match.group(1) in FILE_OPS or "file" in match.group(1):
            raise _refuse(f"the program calls {target}: models may not read or write files")
        return
    if _OTHER_TARGETS.match(target):
        return
    raise _refuse(
        f"the program calls {target[:120]!r}, which is not a built-in ATen operator "
        "(custom and higher-order operators are not accepted)"
    )


def _check_expr(expr: Any) -> None:
    """Shape expressions are parsed by sympify (Python's eval): only arithmetic on shape
    symbols passes."""
    if not isinstance(expr, str) or not _EXPR_CHARS.match(expr) or "__" in expr:
        raise _refuse(f"a symbolic shape expression {str(expr)[:80]!r} is not plain arithmetic")
    for name in _EXPR_NAMES.findall(expr):
        if not (_SYMBOL.match(name) or name in _SYMPY_FUNCTIONS):
            raise _refuse(f"a symbolic shape expression names {name[:40]!r}")


def _check_sample_inputs(data: bytes) -> None:
    """The sample inputs are a torch.save archive (a zip) whose pickle may only rebuild
    tensors; torch.load would fall back to the full unpickler if the safe one refused."""
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pickles = [n for n in inner.namelist() if n.endswith(".pkl")]
            if len(pickles) != 1 or not pickles[0].endswith("/data.pkl"):
                raise _refuse("the sample inputs are not a torch.save archive")
            info = inner.getinfo(pickles[0])
            if info.file_size > MAX_SAMPLE_INPUTS_BYTES or info.compress_type != zipfile.ZIP_STORED:
                raise _refuse("the sample inputs' pickle is too large or compressed")
            payload = inner.read(info)
    except zipfile.BadZipFile:
        raise _refuse("the sample inputs are not a torch.save archive") from None
    try:
        for opcode, arg, _pos in pickletools.genops(payload):
            if opcode.name in _UNSAFE_OPCODES:
                raise _refuse(f"the sample inputs' pickle uses {opcode.name}")
            if opcode.name == "GLOBAL" and str(arg) not in _SAFE_GLOBALS:
                raise _refuse(f"the sample inputs' pickle imports {str(arg)[:80]!r}")
    except ValueError as exc:
        raise _refuse(f"the sample inputs' pickle is malformed ({exc})") from None
