"""The hostile-input corpus through the command line: hostile bundles the worker-side loader must refuse
(shapes that do not fit the model, output that is not 2-D, unknown operators, gigantic shapes, pickles, zip
tricks), malformed confusion-matrix files and bad flags. Each ends with exit code 2, a message naming the
problem in one line (``quirkscope[ command]: error [field]: ...``), no traceback, and nothing written."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from service.cli import main
from tests import hostile

GOOD_CONFUSION = {"classes": hostile.CLASSES, "matrix": [[50, 30, 2, 0], [20, 60, 1, 1], [0, 1, 80, 5], [0, 0, 9, 70]]}


def model_zip(model: bytes | None = None, **manifest_changes) -> bytes:  # type: ignore[no-untyped-def]
    return hostile.zip_of([("manifest.json", json.dumps(hostile.manifest(**manifest_changes)).encode()),
                           ("model.onnx", hostile.onnx_graph() if model is None else model)])


@dataclass(frozen=True)
class CliCase:
    id: str
    files: Callable[[], dict[str, bytes]]  # name -> content, written under the test's input folder
    argv: list[str]  # {in} is the input folder, {out} a folder that must not appear
    says: str


def audit(model: str = "model.zip", confusion: str = "confusion.json", *extra: str) -> list[str]:
    return ["audit", "--model", "{in}/" + model, "--confusion", "{in}/" + confusion, "--embedded",
            "--json", "{out}/report.json", "--report", "{out}/report", "--steps", "2", "--seeds", "1", "--levels", "1",
            *extra]


def with_confusion(model: bytes | Callable[[], bytes], confusion: bytes | str) -> Callable[[], dict[str, bytes]]:
    def files() -> dict[str, bytes]:
        data = confusion.encode() if isinstance(confusion, str) else confusion
        return {"model.zip": model() if callable(model) else model, "confusion.json": data}
    return files


def good_model() -> bytes:
    return model_zip()


def confusion_json(rows: list[list[object]] | str, classes: list[object] | None = None) -> str:
    matrix = rows if isinstance(rows, str) else json.dumps(rows)
    return f'{{"classes": {json.dumps(classes or hostile.CLASSES)}, "matrix": {matrix}}}'


def rows_with(i: int, j: int, value: object) -> list[list[object]]:
    rows = [list(r) for r in GOOD_CONFUSION["matrix"]]
    rows[i][j] = value
    return rows


GOOD = json.dumps(GOOD_CONFUSION)

CASES = [
    # --- hostile bundles, refused by the loader the workers use
    CliCase("bundle-missing", lambda: {"confusion.json": GOOD.encode()}, audit(), "[model]"),
    CliCase("bundle-pickle-checkpoint-file", lambda: {"model.pth": hostile.PICKLE, "confusion.json": GOOD.encode()},
            audit("model.pth"), "pickle-based"),
    CliCase("bundle-pickle-named-zip", with_confusion(hostile.PICKLE, GOOD), audit(), "is a Python pickle"),
    CliCase("bundle-pickle-posing-as-onnx", with_confusion(lambda: model_zip(hostile.PICKLE), GOOD), audit(),
            "model.onnx is a Python pickle, not an ONNX protobuf"),
    CliCase("bundle-torchscript-posing-as-onnx",
            with_confusion(lambda: model_zip(hostile.torchscript_like_zip()), GOOD), audit(), "TorchScript"),
    CliCase("bundle-dot-dot-member", with_confusion(lambda: hostile.bundle(extra=[("../evil.sh", b"x")]), GOOD),
            audit(), "'..'"),
    CliCase("bundle-symlink-member", with_confusion(lambda: hostile.bundle(
        extra=[hostile.symlink_member("notes", "/etc/passwd")]), GOOD), audit(), "symlink"),
    CliCase("bundle-zip-bomb", with_confusion(hostile.zip_bomb_declared, GOOD), audit(), "over the limit"),
    CliCase("bundle-shapes-do-not-match-model", with_confusion(lambda: model_zip(hostile.onnx_graph(
        declared={"appearance": [3, 8, 16, 16], "motion": [2, 4, 16, 16]})), GOOD), audit(),
            "[manifest.inputs]"),
    CliCase("bundle-output-not-2d", with_confusion(lambda: model_zip(hostile.onnx_graph(keep_dims=True)), GOOD),
            audit(), "expected logits of shape (2, 4)"),
    CliCase("bundle-class-count-differs", with_confusion(lambda: model_zip(hostile.onnx_graph(n_classes=3)), GOOD),
            audit(), "lists 4 classes but the model returns 3 logits"),
    CliCase("bundle-onnx-custom-operator", with_confusion(lambda: model_zip(hostile.onnx_graph(
        custom_op=("com.attacker", "Exfiltrate"))), GOOD), audit(), "operator onnx2torch cannot convert"),
    CliCase("bundle-onnx-unknown-operator", with_confusion(lambda: model_zip(hostile.onnx_graph(
        custom_op=("", "NotARealOp"))), GOOD), audit(), "No Op registered for NotARealOp"),
    CliCase("bundle-onnx-not-protobuf", with_confusion(lambda: model_zip(b"\x0a\xff\xff\xff garbage"), GOOD),
            audit(), "not a valid ONNX model"),
    CliCase("bundle-gigantic-declared-shape", with_confusion(lambda: model_zip(inputs=[
        {"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, 10**5, 10**5, 10**5]},
        {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, 4, 16, 16]}]), GOOD), audit(),
            "more than the limit"),
    # --- malformed confusion matrices
    CliCase("confusion-missing", lambda: {"model.zip": good_model()}, audit(), "[confusion]"),
    CliCase("confusion-nan", with_confusion(good_model, confusion_json(json.dumps(GOOD_CONFUSION["matrix"])
                                                                       .replace("30", "NaN", 1))), audit(),
            "confusion.matrix[0][1]"),
    CliCase("confusion-infinity", with_confusion(good_model, confusion_json(json.dumps(GOOD_CONFUSION["matrix"])
                                                                            .replace("30", "-Infinity", 1))),
            audit(), "finite"),
    CliCase("confusion-negative", with_confusion(good_model, confusion_json(rows_with(3, 1, -4))), audit(),
            "confusion.matrix[3][1]"),
    CliCase("confusion-ragged", with_confusion(good_model, confusion_json([[1, 2, 3, 4], [1, 2], [1, 2, 3, 4],
                                                                           [1, 2, 3, 4]])), audit(),
            "confusion.matrix[1]"),
    CliCase("confusion-non-numeric", with_confusion(good_model, confusion_json(rows_with(0, 0, "lots"))), audit(),
            "must be a count"),
    CliCase("confusion-duplicate-class", with_confusion(good_model, confusion_json(
        GOOD_CONFUSION["matrix"], ["Archery", "Archery", "Cycling", "Diving"])), audit(), "appears twice"),
    CliCase("confusion-unknown-class", with_confusion(good_model, confusion_json(
        GOOD_CONFUSION["matrix"], ["Archery", "Bowling", "Cycling", "Karate"])), audit(), "Karate"),
    CliCase("confusion-million-classes", with_confusion(good_model, json.dumps(
        {"classes": [f"c{i}" for i in range(10**6)], "matrix": []})), audit(), "more than the limit"),
    CliCase("confusion-empty-file", with_confusion(good_model, b""), audit(), "empty"),
    CliCase("confusion-not-utf8", with_confusion(good_model, b"\xff\xfe,\x00A\x00"), audit(), "not UTF-8"),
    CliCase("confusion-truncated-json", with_confusion(good_model, GOOD[:40]), audit(), "not valid JSON"),
    CliCase("confusion-a-json-list", with_confusion(good_model, "[[1, 2], [3, 4]]"), audit(), "JSON object"),
    CliCase("confusion-csv-non-numeric", with_confusion(good_model, ",Archery,Bowling,Cycling,Diving\n"
                                                        "Archery,1,x,0,0\nBowling,0,1,0,0\nCycling,0,0,1,0\n"
                                                        "Diving,0,0,0,1\n"), audit(), "must be a count"),
    CliCase("confusion-a-directory", lambda: {"model.zip": good_model(), "confusion.json/inner": b""}, audit(),
            "cannot read the confusion matrix file"),
    # --- flags and options
    CliCase("option-pair-of-unknown-class", with_confusion(good_model, GOOD),
            audit("model.zip", "confusion.json", "--pairs", "Archery:Karate"), "Karate"),
    CliCase("option-min-rate-above-one", with_confusion(good_model, GOOD),
            audit("model.zip", "confusion.json", "--min-rate", "2"), "options.min_rate"),
    CliCase("option-top-k-zero", with_confusion(good_model, GOOD), audit("model.zip", "confusion.json",
                                                                         "--top-k", "0"), "[top-k]"),
    CliCase("option-steps-not-a-number", with_confusion(good_model, GOOD),
            audit("model.zip", "confusion.json", "--steps", "many"), "[steps]"),
    CliCase("audit-not-embedded", with_confusion(good_model, GOOD),
            ["audit", "--model", "{in}/model.zip", "--confusion", "{in}/confusion.json", "--json", "{out}/r.json"],
            "[embedded]"),
    CliCase("visualize-unknown-class", lambda: {"model.zip": good_model()},
            ["visualize", "--model", "{in}/model.zip", "--classes", "Karate", "--out", "{out}"], "[classes]"),
    CliCase("export-manifest-missing", lambda: {},
            ["export", "os:getcwd", "--manifest", "{in}/manifest.json", "--out", "{out}/b.zip"], "[manifest]"),
    CliCase("token-unknown-scope", lambda: {}, ["token", "create", "--project", "p", "--scopes", "root"],
            "[scopes]"),
]


def test_the_cli_corpus_has_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 35


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_cli_input_exits_2_naming_the_problem_and_writes_nothing(case: CliCase, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name, data in case.files().items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(data)
    monkeypatch.setenv("QUIRKSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    code, err = run_cli([a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in case.argv], capsys)
    assert code == 2, err
    assert err and case.says in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert len(err) == 1 and err[0].startswith("quirkscope") and ": error" in err[0], err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
