"""Confusion-matrix input (DESIGN 3.2): parses the three accepted forms (a JSON matrix, CSV text, label
lists), validates them with errors that name the offending field, and aligns the result to the manifest's
class order. Pure (numpy; scikit-learn only for label lists): no Flask, importable by workers."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from workers.engine.errors import InvalidConfusionMatrix, InvalidInput

# Largest count accepted in one cell: far above any dataset, and small enough that a row of 10^6 such
# cells cannot overflow int64.
MAX_COUNT = 10**12
_LISTED = 20  # names listed in an error message before "and N more"


@dataclass(frozen=True, eq=False)
class ConfusionMatrix:
    """A validated confusion matrix: ``counts[i, j]`` = examples of true class ``classes[i]`` predicted as
    ``classes[j]`` (rows = true, columns = predicted), int64, read-only."""

    classes: list[str]
    counts: np.ndarray

    def __post_init__(self) -> None:
        counts = np.array(self.counts, dtype=np.int64)  # a private copy
        k = len(self.classes)
        if counts.shape != (k, k):
            raise ValueError(f"counts must be {k} x {k} for {k} classes, got shape {counts.shape}")
        if len(set(self.classes)) != k:
            raise ValueError("class names must be unique")
        if (counts < 0).any():
            raise ValueError("counts must be >= 0")
        counts.setflags(write=False)
        object.__setattr__(self, "classes", list(self.classes))
        object.__setattr__(self, "counts", counts)

    @property
    def support(self) -> np.ndarray:
        """Examples per true class: the row sums, ``(K,)`` int64."""
        return self.counts.sum(axis=1)

    def index(self, name: str) -> int:
        return self.classes.index(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"classes", "matrix"}``, which ``parse_confusion`` reads back."""
        return {"classes": list(self.classes), "matrix": self.counts.tolist()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return self.classes == other.classes and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]


def _fail(message: str, field: str) -> InvalidConfusionMatrix:
    return InvalidConfusionMatrix(message, field=field)


def _listing(names: Sequence[Any]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _as_list(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


# ------------------------------------------------------------------------------------------- checks
def _check_classes(value: Any, source: str, max_classes: int, where: Callable[[int], str] | None = None) -> list[str]:
    """A list of unique, non-empty class names; ``where(j)`` describes position j in messages."""
    value = _as_list(value)
    if not isinstance(value, list):
        raise _fail(f"classes must be a list of class names, got {type(value).__name__}", f"{source}.classes")
    if not value:
        raise _fail("classes is empty", f"{source}.classes")
    if len(value) > max_classes:
        raise _fail(f"{len(value)} classes is more than the limit of {max_classes}", f"{source}.classes")
    seen: dict[str, int] = {}
    for j, name in enumerate(value):
        at = where(j) if where else f"classes[{j}]"
        if not isinstance(name, str) or not name.strip():
            raise _fail(f"{at} must be a non-empty class name, got {name!r}", f"{source}.classes[{j}]")
        if name in seen:
            raise _fail(f"{at}: class {name!r} appears twice (first at position {seen[name]})",
                        f"{source}.classes[{j}]")
        seen[name] = j
    return list(value)


def _count(value: Any, field: str, what: str) -> int:
    """One cell as a non-negative integer count; 3.0 is 3, 3.5 is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _fail(f"{what} must be a count (a number), got {value!r}", field)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise _fail(f"{what} is {value}; counts must be finite numbers", field)
        if value < 0:
            raise _fail(f"{what} is {value}; counts must be >= 0", field)
        if not float(value).is_integer():
            raise _fail(f"{what} is {value}; counts must be whole numbers (a matrix of rates or "
                        "probabilities is not accepted: send the counts)", field)
    value = int(value)
    if value < 0:
        raise _fail(f"{what} is {value}; counts must be >= 0", field)
    if value > MAX_COUNT:
        raise _fail(f"{what} is {value}, more than the limit of {MAX_COUNT}", field)
    return value


def _check_matrix(value: Any, classes: list[str], source: str) -> np.ndarray:
    value = _as_list(value)
    k = len(classes)
    if not isinstance(value, list):
        raise _fail(f"matrix must be a list of rows, got {type(value).__name__}", f"{source}.matrix")
    if len(value) != k:
        raise _fail(f"matrix has {len(value)} rows for {k} classes; it must be square, one row and one "
                    "column per class", f"{source}.matrix")
    value = [_as_list(row) for row in value]
    if all(isinstance(row, list) and len(row) == k for row in value) and not any(
        isinstance(cell, bool) for row in value for cell in row
    ):
        try:  # fast path: a clean integer matrix; anything else is checked cell by cell below
            fast = np.array(value)
        except (ValueError, TypeError, OverflowError):
            fast = None
        if fast is not None and fast.shape == (k, k) and fast.dtype.kind in "iu":
            if (fast >= 0).all() and (fast <= MAX_COUNT).all():
                return fast.astype(np.int64)
    counts = np.zeros((k, k), dtype=np.int64)
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise _fail(f"matrix row {i} ({classes[i]!r}) must be a list of counts", f"{source}.matrix[{i}]")
        if len(row) != k:
            raise _fail(f"matrix row {i} ({classes[i]!r}) has {len(row)} values, expected {k} (one per class); "
                        "the matrix must be square", f"{source}.matrix[{i}]")
        for j, cell in enumerate(row):
            counts[i, j] = _count(cell, f"{source}.matrix[{i}][{j}]",
                                  f"matrix[{i}][{j}] (true {classes[i]!r}, predicted {classes[j]!r})")
    return counts


# -------------------------------------------------------------------------------------------- forms
def _from_matrix_dict(payload: dict, source: str,
                      max_classes: int) -> tuple[list[str], np.ndarray, Callable[[int], str]]:
    classes = _check_classes(payload["classes"], source, max_classes)
    counts = _check_matrix(payload["matrix"], classes, source)
    return classes, counts, lambda i: f"{source}.matrix[{i}]"


def _labels_to_indices(values: list, classes: list[str], source: str, key: str) -> np.ndarray:
    index = {name: j for j, name in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int64)
    unknown: dict[Any, int] = {}  # label -> first position
    for n, label in enumerate(values):
        if isinstance(label, str) and label in index:
            out[n] = index[label]
        elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(classes):
            out[n] = int(label)
        else:
            try:
                unknown.setdefault(label, n)
            except TypeError:  # unhashable (a list, a dict)
                raise _fail(f"{key}[{n}] must be a class name or a class index, got {label!r}",
                            f"{source}.{key}[{n}]") from None
    if unknown:
        first = min(unknown.values())
        raise _fail(f"{key} has labels that are neither class names nor indices 0..{len(classes) - 1}: "
                    f"{_listing(list(unknown))}", f"{source}.{key}[{first}]")
    return out


def _from_label_dict(payload: dict, source: str,
                     max_classes: int) -> tuple[list[str], np.ndarray, Callable[[int], str]]:
    from sklearn.metrics import confusion_matrix  # heavy import, only for this form

    classes = _check_classes(payload["classes"], source, max_classes)
    y_true, y_pred = _as_list(payload["y_true"]), _as_list(payload["y_pred"])
    for key, value in (("y_true", y_true), ("y_pred", y_pred)):
        if not isinstance(value, list):
            raise _fail(f"{key} must be a list of labels, got {type(value).__name__}", f"{source}.{key}")
    if len(y_true) != len(y_pred):
        raise _fail(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; they must pair up",
                    f"{source}.y_pred")
    if not y_true:
        raise _fail("y_true and y_pred are empty", f"{source}.y_true")
    true = _labels_to_indices(y_true, classes, source, "y_true")
    pred = _labels_to_indices(y_pred, classes, source, "y_pred")
    counts = confusion_matrix(true, pred, labels=np.arange(len(classes))).astype(np.int64)
    return classes, counts, lambda i: f"{source}.y_true"


def _from_dict(payload: dict, source: str, max_classes: int) -> tuple[list[str], np.ndarray, Callable[[int], str]]:
    allowed = {"classes", "matrix", "y_true", "y_pred"}
    for key in payload:
        if key not in allowed:
            raise _fail(f"unknown key {key!r}; expected 'classes' with 'matrix', or 'classes' with "
                        "'y_true' and 'y_pred'", f"{source}.{key}")
    has_matrix = "matrix" in payload
    has_labels = "y_true" in payload or "y_pred" in payload
    if has_matrix and has_labels:
        raise _fail("give either 'matrix' or 'y_true' and 'y_pred', not both", source)
    if not has_matrix and not has_labels:
        raise _fail("missing 'matrix' (or 'y_true' and 'y_pred')", f"{source}.matrix")
    required = ("classes", "matrix") if has_matrix else ("classes", "y_true", "y_pred")
    for key in required:
        if key not in payload:
            raise _fail(f"missing {key!r}", f"{source}.{key}")
    if has_matrix:
        return _from_matrix_dict(payload, source, max_classes)
    return _from_label_dict(payload, source, max_classes)


def _sniff_delimiter(first_line: str) -> str:
    for candidate in (",", "\t", ";"):
        if candidate in first_line:
            return candidate
    return ","


def _from_csv(text: str, source: str, max_classes: int) -> tuple[list[str], np.ndarray, Callable[[int], str]]:
    """Header row ``<anything>,c1,..,cK``, then one row per true class ``ci,n1,..,nK`` in any order."""
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text), delimiter=_sniff_delimiter(lines[0] if lines else ""))
    rows: list[tuple[int, list[str]]] = []  # (line number, cells)
    try:
        for cells in reader:
            cells = [c.strip() for c in cells]
            while cells and not cells[-1]:  # trailing delimiters
                cells.pop()
            if cells:
                rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise _fail(f"CSV is malformed at line {reader.line_num}: {exc}", source) from exc
    if not rows:
        raise _fail("CSV is empty; expected a header row of class names and one row per class", source)
    header_line, header = rows[0]
    if len(header) < 2:
        raise _fail(f"CSV line {header_line}: the header must list the class names after its first cell",
                    f"{source}.classes")
    classes = _check_classes(header[1:], source, max_classes, where=lambda j: f"CSV header column {j + 2}")
    k = len(classes)
    body = rows[1:]
    if len(body) != k:
        raise _fail(f"CSV has {len(body)} rows of counts for {k} classes in its header; the matrix must be "
                    "square, one row per class", f"{source}.matrix")
    index = {name: j for j, name in enumerate(classes)}
    counts = np.zeros((k, k), dtype=np.int64)
    row_of_class: dict[int, int] = {}  # class index -> data row number, for error fields
    for r, (line, cells) in enumerate(body):
        name, values = cells[0], cells[1:]
        field = f"{source}.matrix[{r}]"
        if name not in index:
            raise _fail(f"CSV line {line} is for class {name!r}, which is not in the header", field)
        i = index[name]
        if i in row_of_class:
            raise _fail(f"CSV line {line}: class {name!r} has two rows", field)
        row_of_class[i] = r
        if len(values) != k:
            raise _fail(f"CSV line {line} ({name!r}) has {len(values)} counts, expected {k} (one per class); "
                        "the matrix must be square", field)
        for j, cell in enumerate(values):
            what = f"CSV line {line} column {j + 2} (true {name!r}, predicted {classes[j]!r})"
            try:
                number: int | float = int(cell)
            except ValueError:
                try:
                    number = float(cell)
                except ValueError:
                    raise _fail(f"{what} must be a count (a number), got {cell!r}", f"{field}[{j}]") from None
            counts[i, j] = _count(number, f"{field}[{j}]", what)
    return classes, counts, lambda i: f"{source}.matrix[{row_of_class[i]}]"


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(f"the confusion matrix is not UTF-8 text: {exc}", source) from exc


# ----------------------------------------------------------------------------------------- public
def _align(classes: list[str], counts: np.ndarray, manifest_classes: Sequence[str], source: str,
           row_field: Callable[[int], str]) -> ConfusionMatrix:
    manifest = list(manifest_classes)
    if len(set(manifest)) != len(manifest):
        raise ValueError("manifest_classes has repeated names")
    in_manifest, given = set(manifest), set(classes)
    unknown = [c for c in classes if c not in in_manifest]
    missing = [c for c in manifest if c not in given]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"classes not in the model's manifest: {_listing(unknown)}")
        if missing:
            parts.append(f"manifest classes missing from the confusion matrix: {_listing(missing)}")
        field = f"{source}.classes[{classes.index(unknown[0])}]" if unknown else f"{source}.classes"
        raise _fail("; ".join(parts) + " (the classes must be the manifest's, in any order)", field)
    support = counts.sum(axis=1)
    empty = [i for i in range(len(classes)) if support[i] == 0]
    if empty:
        raise _fail(f"classes with no examples (a row of zeros), so their confusion rates are undefined: "
                    f"{_listing([classes[i] for i in empty])}", row_field(empty[0]))
    order = {name: i for i, name in enumerate(classes)}
    perm = np.array([order[name] for name in manifest], dtype=np.int64)
    return ConfusionMatrix(classes=manifest, counts=counts[np.ix_(perm, perm)])


def parse_confusion(
    payload: dict | str | bytes,
    manifest_classes: Sequence[str],
    *,
    max_classes: int = 1000,
    source: str = "confusion",
) -> ConfusionMatrix:
    """Validate a confusion matrix and align it to ``manifest_classes`` (by name; same set, any order).

    ``payload`` is a dict ``{"classes", "matrix"}`` (rows = true, columns = predicted counts) or
    ``{"classes", "y_true", "y_pred"}`` (labels are class names or integer indices into ``classes``), or
    text / bytes holding that JSON object or CSV (a header row whose first cell is ignored and then the
    class names; then one row per true class, first cell its name, in any order; ``,``, tab or ``;``).
    Every problem raises ``InvalidConfusionMatrix`` whose ``field`` starts with ``source``, e.g.
    ``confusion.matrix[3]`` (a row), ``confusion.matrix[3][1]`` (a cell), ``confusion.classes[2]``.
    A class without examples (zero row) is an error, since its rates are undefined.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        payload = _decode(bytes(payload), source)
    if isinstance(payload, str):
        text = payload.lstrip("\ufeff \t\r\n")
        if text.startswith(("{", "[")):
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _fail(f"the confusion matrix is not valid JSON: {exc}", source) from exc
        else:
            classes, counts, row_field = _from_csv(text, source, max_classes)
            return _align(classes, counts, manifest_classes, source, row_field)
    if not isinstance(payload, dict):
        raise _fail("the confusion matrix must be a JSON object {\"classes\", \"matrix\"} or "
                    "{\"classes\", \"y_true\", \"y_pred\"}, or CSV text", source)
    classes, counts, row_field = _from_dict(payload, source, max_classes)
    return _align(classes, counts, manifest_classes, source, row_field)


def load_confusion_file(path: Path, manifest_classes: Sequence[str], **kwargs: Any) -> ConfusionMatrix:
    """Read a confusion matrix file, JSON or CSV by its content (JSON starts with ``{``), and parse it with
    ``parse_confusion(..., **kwargs)``. An unreadable file raises ``InvalidInput``."""
    source = kwargs.get("source", "confusion")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the confusion matrix file {str(path)!r}: {exc.strerror or exc}",
                           field=source) from exc
    return parse_confusion(raw, manifest_classes, **kwargs)
