"""Vetting of a ``model.pt2`` (torch.export.save) archive before ``torch.export.load`` may touch it.

In torch 2.14.1 ``torch.export.load`` (``export/pt2_archive/_package.py`` and ``_export/serde/serialize.py``):
- unpickles ``data/sample_inputs/<model>.pt`` with ``weights_only=True`` and, if that fails, again with
  ``weights_only=False``; unpickles with ``weights_only=False`` every weight/constant whose payload config says
  ``use_pickle``, and the legacy ``data/weights/<model>.pt`` / ``data/constants/<model>.pt``;
  ``pickle.loads`` ``opaque_obj_*`` and ``_pickle_load_obj`` ``custom_obj_*`` constants; hands
  ``data/aotinductor/*`` (compiled native code) to the AOTI loader;
- ``sympy.sympify``-s (``eval``) every ``expr_str`` of the graph JSON, imports the modules named by pytree
  contexts (``default_factory_module``, ``__enum__``), and resolves node targets by ``getattr`` on ``torch``;
- and ``ExportedProgram.module()`` ``exec``-s the archive's ``guards_code`` on the first forward.
So: only the members of a one-model archive are allowed; every member that would be unpickled must load with
the weights-only unpickler (and be tensors); the graph JSON must only hold ATen operators, symbolic
expressions and guards from a fixed grammar, and plain names everywhere else."""
from __future__ import annotations

import ast
import io
import json
import re
import tokenize
import zipfile
from collections.abc import Callable

import torch
from torch.export.pt2_archive._package import PT2ArchiveReader

from workers.engine.bundle.archive import MODEL_FILES, looks_like_pickle
from workers.engine.errors import BundleError, UnsafeBundle

MODEL_FILE = MODEL_FILES["torch.export"]

_ALLOWED_MEMBERS = [re.compile(p) for p in (
    r"archive_format", r"archive_version", r"byteorder", r"\.data/version", r"\.data/serialization_id",
    r"models/model\.json",
    r"data/weights/model_weights_config\.json", r"data/weights/weight_\d+",
    r"data/constants/model_constants_config\.json", r"data/constants/tensor_\d+",
    r"data/sample_inputs/model\.pt",
    r"extra/[A-Za-z0-9_.\-]+",
)]
_REQUIRED_MEMBERS = (
    "archive_format", "archive_version", "models/model.json", "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json", "data/sample_inputs/model.pt",
)

_PLAIN = re.compile(r"[A-Za-z0-9_.]*")
_VERSION = re.compile(r"[A-Za-z0-9_.+\-]*")
_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]+")
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.[A-Za-z0-9_]+")
DENIED_ATEN_OPS = frozenset({"from_file", "_print", "save", "load"})
_OTHER_TARGETS = frozenset(
    {f"_operator.{op}" for op in (
        "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_",
    )}
    | {f"torch.sym_{op}" for op in ("float", "int", "max", "min", "not", "sqrt", "ite")}
    | {f"math.{op}" for op in ("floor", "ceil", "trunc", "sqrt")}
)
_REFUSED_KEYS = frozenset({"as_custom_obj", "as_operator", "as_graph"})
_TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo", "zoo", "nan", "floor", "ceiling", "sqrt",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural", "FloatTrueDiv", "IntTrueDiv",
    "OpaqueUnaryFn_sqrt", "Identity",
})
_GUARD_NAMES = _SYMPY_NAMES | {"L", "size", "stride", "storage_offset", "dim", "and", "or", "not", "math",
                               "isnan", "inf"}
_EXPR_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "<", ">", "<=", ">=", "==",
                       "!=", "&", "|", "~"})
_GUARD_OPS = (_EXPR_OPS - {"="}) | {"[", "]", "."}


def _unsafe(message: str) -> UnsafeBundle:
    return UnsafeBundle(f"{MODEL_FILE} {message}; refused (it could run code when loaded)", field=MODEL_FILE)


def _safe_expression(text: str, names: frozenset[str], ops: frozenset[str], string_ok: Callable[[str], bool]) -> bool:
    """True when ``text`` tokenises into allowed names, numbers, operators and harmless string literals only, so
    that ``eval`` of it cannot reach anything outside the names given."""
    if len(text) > 10_000 or any(c in text for c in "\r\n\x0b\x0c\\"):
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NAME:
            if tok.string not in names and not _SYMBOL.fullmatch(tok.string):
                return False
        elif tok.type == tokenize.NUMBER:
            continue
        elif tok.type == tokenize.OP:
            if tok.string not in ops:
                return False
        elif tok.type == tokenize.STRING:
            if tok.string[0] not in "'\"":  # no f/r/b prefixes
                return False
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                return False
            if not isinstance(value, str) or not string_ok(value):
                return False
        else:
            return False
    return True


def _check_expr(text: object, where: str) -> None:
    if not isinstance(text, str) or not _safe_expression(text, _SYMPY_NAMES, _EXPR_OPS, _SYMBOL.fullmatch):
        raise _unsafe(f"holds a symbolic expression outside the allowed grammar at {where}: {str(text)[:80]!r}")


def _check_guard(text: object, where: str) -> None:
    ident = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").fullmatch
    if not isinstance(text, str) or not _safe_expression(text, _GUARD_NAMES, _GUARD_OPS, ident):
        raise _unsafe(f"holds a guard outside the allowed grammar at {where}: {str(text)[:80]!r}")


def _check_treespec(text: object, where: str) -> None:
    try:
        protocol, spec = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _unsafe(f"holds an unreadable pytree spec at {where}") from None
    stack = [spec]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or node.get("type") not in _TREESPEC_TYPES:
            kind = node.get("type") if isinstance(node, dict) else node
            raise _unsafe(f"holds a pytree spec of type {str(kind)[:60]!r} at {where} (only tuples, lists, dicts)")
        context = node.get("context")
        if context is not None:
            try:
                parsed = json.loads(context)
            except (TypeError, ValueError):
                raise _unsafe(f"holds an unreadable pytree context at {where}") from None
            names_objects = isinstance(parsed, dict) or (
                isinstance(parsed, list) and any(not isinstance(k, (str, int)) for k in parsed)
            )
            if names_objects:
                raise _unsafe(f"holds a pytree context that names Python objects at {where}")
        stack.extend(node.get("children_spec") or [])


def _check_target(target: object, where: str) -> None:
    if not isinstance(target, str):
        raise _unsafe(f"holds a non-string operator at {where}")
    match = _ATEN_TARGET.fullmatch(target)
    if match and match.group(1) not in DENIED_ATEN_OPS:
        return
    if target in _OTHER_TARGETS:
        return
    raise _unsafe(f"calls {target[:80]!r} at {where}; only ATen operators are allowed")


def _check_text(text: str, where: str) -> None:
    if not _PLAIN.fullmatch(text):
        raise _unsafe(f"holds an unexpected name {text[:80]!r} at {where}")


def _check_metadata(meta: object, where: str) -> None:
    if not isinstance(meta, dict):
        raise _unsafe(f"holds malformed metadata at {where}")
    for key, value in meta.items():
        _check_text(key, where)
        if not isinstance(value, str) or any((ord(c) < 32 and c not in "\n\t") or c == "\x7f" for c in value):
            raise _unsafe(f"holds control characters in metadata '{key}' at {where}")


def check_program_json(program: object, where: str = "models/model.json") -> None:
    """Walk the serialised ExportedProgram; raise ``UnsafeBundle`` on anything outside the allowed shapes."""
    stack: list[tuple[object, str]] = [(program, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if {"target", "inputs", "outputs"} <= value.keys():
                _check_target(value["target"], path)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _unsafe(f"holds a non-string key at {path}")
                sub = f"{path}.{key}"
                if key in _REFUSED_KEYS:
                    raise _unsafe(f"holds '{key}' (custom objects, operators or subgraphs) at {path}")
                if key == "custom_obj_values" and item:
                    raise _unsafe(f"holds custom objects at {path}")
                if key == "target" and {"target", "inputs", "outputs"} <= value.keys():
                    continue
                if key == "metadata":
                    _check_metadata(item, sub)
                elif key == "expr_str":
                    _check_expr(item, sub)
                elif key in ("in_spec", "out_spec"):
                    _check_treespec(item, sub)
                elif key == "guards_code":
                    if not isinstance(item, list):
                        raise _unsafe(f"holds malformed guards at {sub}")
                    for guard in item:
                        _check_guard(guard, sub)
                elif key == "torch_version":
                    if not isinstance(item, str) or not _VERSION.fullmatch(item):
                        raise _unsafe(f"holds an unexpected torch_version at {sub}")
                else:
                    _check_text(key, path)
                    stack.append((item, sub))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path)
        elif value is not None and not isinstance(value, (bool, int, float)):
            raise _unsafe(f"holds an unexpected value at {path}")


def _weights_only(data: bytes, member: str) -> object:
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise _unsafe(f"member '{member}' holds a pickle the weights-only unpickler refuses ({first})") from exc


def _check_tensor(value: object, member: str) -> None:
    if not isinstance(value, torch.Tensor) or type(value) not in (torch.Tensor, torch.nn.Parameter) \
            or value.layout != torch.strided:
        raise _unsafe(f"member '{member}' unpickles to {type(value).__name__}, not a dense tensor")


def _check_payload_config(reader: PT2ArchiveReader, config_file: str, directory: str, prefix: str,
                          names: set[str]) -> None:
    try:
        config = json.loads(reader.read_string(config_file))["config"]
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise BundleError(f"{MODEL_FILE} member '{config_file}' is unreadable: {exc}", field=MODEL_FILE) from exc
    if not isinstance(config, dict):
        raise BundleError(f"{MODEL_FILE} member '{config_file}' is malformed", field=MODEL_FILE)
    check_program_json({k: None for k in config}, config_file)
    for fqn, meta in config.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or not re.fullmatch(rf"{prefix}\d+", path_name):
            raise _unsafe(f"member '{config_file}' points '{fqn}' at {str(path_name)[:60]!r}, not a {prefix}* file")
        member = directory + path_name
        if member not in names:
            raise BundleError(f"{MODEL_FILE} lacks '{member}', which '{config_file}' names", field=MODEL_FILE)
        if meta.get("use_pickle"):
            _check_tensor(_weights_only(reader.read_bytes(member), member), member)
        check_program_json(meta.get("tensor_meta"), f"{config_file}:{fqn}")


def check_pt2_archive(data: bytes, max_uncompressed_bytes: int) -> None:
    """Raise ``UnsafeBundle`` (or ``BundleError``) unless ``torch.export.load`` can read ``data`` without running
    anything from it. ``data`` is exactly the bytes later handed to ``torch.export.load``."""
    if looks_like_pickle(data):
        raise _unsafe("is a Python pickle, not a torch.export archive")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise BundleError(f"{MODEL_FILE} is not a torch.export archive (not a zip file)", field=MODEL_FILE)
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(f"{MODEL_FILE} is not a readable zip archive: {exc}", field=MODEL_FILE) from exc
    raw = [i.filename for i in infos]
    if len(set(raw)) != len(raw):
        raise _unsafe("lists a member twice")
    if sum(i.file_size for i in infos) > max_uncompressed_bytes:
        raise BundleError(f"{MODEL_FILE} unpacks to more than {max_uncompressed_bytes} bytes", field=MODEL_FILE)
    files = [n for n in raw if not n.endswith("/")]
    roots = {n.split("/", 1)[0] for n in files}
    if len(roots) != 1 or not all("/" in n for n in files):
        raise _unsafe("does not keep its members under one root folder")
    root = roots.pop() + "/"
    names = {n[len(root):] for n in files}
    for name in sorted(names):
        if not any(p.fullmatch(name) for p in _ALLOWED_MEMBERS):
            raise _unsafe(f"holds '{name}', which is not a member of a one-model torch.export.save archive")
    missing = [m for m in _REQUIRED_MEMBERS if m not in names]
    if missing:
        raise BundleError(f"{MODEL_FILE} is not a torch.export.save archive: it lacks {', '.join(missing)}",
                          field=MODEL_FILE)
    try:  # read through the reader torch.export.load uses, so that both see the same members
        reader = PT2ArchiveReader(io.BytesIO(data))
        listed = set(reader.get_file_names())
        fmt, version = reader.read_string("archive_format"), reader.read_string("archive_version")
    except Exception as exc:
        raise BundleError(f"{MODEL_FILE} is not a readable torch.export archive: {exc}", field=MODEL_FILE) from exc
    if listed != names:
        raise _unsafe("lists different members to different zip readers")
    if fmt != "pt2" or version != "0":
        raise BundleError(f"{MODEL_FILE} has archive format {fmt!r} version {version!r}; expected 'pt2' version '0'",
                          field=MODEL_FILE)
    _check_payload_config(reader, "data/weights/model_weights_config.json", "data/weights/", "weight_", names)
    _check_payload_config(reader, "data/constants/model_constants_config.json", "data/constants/", "tensor_", names)
    sample = _weights_only(reader.read_bytes("data/sample_inputs/model.pt"), "data/sample_inputs/model.pt")
    if not isinstance(sample, (tuple, dict)):
        raise _unsafe("member 'data/sample_inputs/model.pt' is not a tuple of example inputs")
    try:
        program = json.loads(reader.read_bytes("models/model.json"))
    except ValueError as exc:
        raise BundleError(f"{MODEL_FILE} member 'models/model.json' is not JSON: {exc}", field=MODEL_FILE) from exc
    check_program_json(program)
