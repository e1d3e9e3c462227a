"""Confusion-matrix input (DESIGN 3.2): the three forms, alignment to the manifest, and every error with
the field it names."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workers.audit.confusion import ConfusionMatrix, load_confusion_file, parse_confusion
from workers.engine.errors import InvalidConfusionMatrix, InvalidInput

MANIFEST = ["walk", "run", "jump"]
# rows = true, columns = predicted, in MANIFEST order
COUNTS = [[8, 2, 0], [1, 7, 2], [0, 3, 9]]


def _raises(payload, field: str, *words: str, manifest=MANIFEST, **kw) -> InvalidConfusionMatrix:
    with pytest.raises(InvalidConfusionMatrix) as info:
        parse_confusion(payload, manifest, **kw)
    error = info.value
    assert error.field == field, (error.field, error.message)
    for word in words:
        assert word in error.message, (word, error.message)
    return error


def _matrix(classes=MANIFEST, matrix=COUNTS) -> dict:
    return {"classes": list(classes), "matrix": [list(row) for row in matrix]}


# ------------------------------------------------------------------------------------------------ forms
def test_json_dict_matrix_is_parsed_as_int64_counts():
    cm = parse_confusion(_matrix(), MANIFEST)
    assert cm.classes == MANIFEST
    assert cm.counts.dtype == np.int64
    assert cm.counts.tolist() == COUNTS
    assert cm.support.tolist() == [10, 10, 12]


def test_json_text_and_bytes_parse_like_the_dict():
    text = json.dumps(_matrix())
    assert parse_confusion(text, MANIFEST) == parse_confusion(_matrix(), MANIFEST)
    assert parse_confusion(("\ufeff  " + text).encode(), MANIFEST).counts.tolist() == COUNTS


def test_whole_float_counts_are_accepted():
    matrix = [[float(v) for v in row] for row in COUNTS]
    assert parse_confusion(_matrix(matrix=matrix), MANIFEST).counts.tolist() == COUNTS


def test_csv_with_header_and_class_column_is_parsed():
    text = ",walk,run,jump\nwalk,8,2,0\nrun,1,7,2\njump,0,3,9\n"
    assert parse_confusion(text, MANIFEST).counts.tolist() == COUNTS
    assert parse_confusion(text.encode(), MANIFEST).counts.tolist() == COUNTS


def test_csv_header_first_cell_rows_order_and_delimiters_are_free():
    # header's first cell is anything; rows come in another order than the columns; tab-separated;
    # blank lines, spaces and trailing delimiters are tolerated
    text = "true\\pred\twalk\trun\tjump\n\n jump \t0\t3\t9\t\nwalk\t8\t2\t0\nrun\t1\t7\t2.0\n"
    assert parse_confusion(text, MANIFEST).counts.tolist() == COUNTS
    semicolons = "x;walk;run;jump\r\nwalk;8;2;0\r\nrun;1;7;2\r\njump;0;3;9\r\n"
    assert parse_confusion(semicolons, MANIFEST).counts.tolist() == COUNTS


def test_label_lists_with_names_and_indices_give_sklearn_counts():
    y_true = ["walk", "walk", "run", 1, 2, "jump"]
    y_pred = ["walk", "run", "run", "jump", 1, 2]
    cm = parse_confusion({"classes": MANIFEST, "y_true": y_true, "y_pred": y_pred}, MANIFEST)
    assert cm.counts.tolist() == [[1, 1, 0], [0, 1, 1], [0, 1, 1]]


def test_label_lists_keep_the_full_label_set_when_a_class_is_never_predicted():
    cm = parse_confusion({"classes": MANIFEST, "y_true": [0, 1, 2], "y_pred": [1, 1, 1]}, MANIFEST)
    assert cm.counts.shape == (3, 3)
    assert cm.counts[:, 1].tolist() == [1, 1, 1]


def test_matrix_is_aligned_to_the_manifest_order_by_name():
    permuted = ["jump", "walk", "run"]
    perm = [MANIFEST.index(c) for c in permuted]
    matrix = [[COUNTS[i][j] for j in perm] for i in perm]
    cm = parse_confusion(_matrix(permuted, matrix), MANIFEST)
    assert cm.classes == MANIFEST
    assert cm.counts.tolist() == COUNTS


def test_csv_and_labels_are_aligned_to_the_manifest_order_too():
    text = ",run,jump,walk\nrun,7,2,1\njump,3,9,0\nwalk,2,0,8\n"
    assert parse_confusion(text, MANIFEST).counts.tolist() == COUNTS
    cm = parse_confusion({"classes": ["jump", "walk", "run"], "y_true": [0, 1, 2], "y_pred": [0, 2, 2]}, MANIFEST)
    # index labels refer to the payload's classes: true jump->jump, walk->run, run->run
    assert cm.counts.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_parsed_matrix_is_read_only_and_round_trips_through_to_dict():
    cm = parse_confusion(_matrix(), MANIFEST)
    with pytest.raises(ValueError):
        cm.counts[0, 0] = 5
    assert parse_confusion(cm.to_dict(), MANIFEST) == cm


def test_load_confusion_file_picks_json_or_csv_by_content(tmp_path):
    as_json = tmp_path / "cm.txt"
    as_json.write_text(json.dumps(_matrix()))
    as_csv = tmp_path / "cm.json"  # misleading suffix: the content decides
    as_csv.write_text(",walk,run,jump\nwalk,8,2,0\nrun,1,7,2\njump,0,3,9\n")
    assert load_confusion_file(as_json, MANIFEST).counts.tolist() == COUNTS
    assert load_confusion_file(as_csv, MANIFEST).counts.tolist() == COUNTS


def test_load_confusion_file_reports_an_unreadable_file_as_invalid_input(tmp_path):
    with pytest.raises(InvalidInput) as info:
        load_confusion_file(tmp_path / "missing.csv", MANIFEST, source="cm")
    assert info.value.field == "cm"


# ----------------------------------------------------------------------------------------------- errors
def test_wrong_number_of_rows_is_reported_on_the_matrix():
    _raises(_matrix(matrix=COUNTS[:2]), "confusion.matrix", "2 rows", "square")


def test_a_short_row_is_reported_with_its_index():
    matrix = [row[:] for row in COUNTS]
    matrix[1] = [1, 7]
    _raises(_matrix(matrix=matrix), "confusion.matrix[1]", "row 1", "'run'", "2 values", "expected 3")


def test_a_short_csv_row_is_reported_with_its_row_and_line():
    text = ",walk,run,jump\nwalk,8,2,0\nrun,1,7\njump,0,3,9\n"
    _raises(text, "confusion.matrix[1]", "CSV line 3", "2 counts")


def test_csv_with_missing_rows_is_not_square():
    _raises(",walk,run,jump\nwalk,8,2,0\nrun,1,7,2\n", "confusion.matrix", "2 rows", "square")


def test_negative_counts_are_rejected_with_the_cell():
    matrix = [row[:] for row in COUNTS]
    matrix[2][1] = -3
    _raises(_matrix(matrix=matrix), "confusion.matrix[2][1]", ">= 0", "'jump'", "'run'")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_counts_are_rejected_with_the_cell(bad):
    matrix = [row[:] for row in COUNTS]
    matrix[0][2] = bad
    _raises(_matrix(matrix=matrix), "confusion.matrix[0][2]", "finite")


def test_nan_in_csv_is_rejected_with_the_cell():
    _raises(",walk,run,jump\nwalk,8,2,0\nrun,1,nan,2\njump,0,3,9\n", "confusion.matrix[1][1]", "finite")


@pytest.mark.parametrize("bad", [2.5, 0.25])
def test_fractional_counts_are_rejected(bad):
    matrix = [row[:] for row in COUNTS]
    matrix[1][0] = bad
    _raises(_matrix(matrix=matrix), "confusion.matrix[1][0]", "whole numbers")


@pytest.mark.parametrize("bad", ["3", None, True, [1]])
def test_non_numbers_in_a_json_matrix_are_rejected(bad):
    matrix = [row[:] for row in COUNTS]
    matrix[1][2] = bad
    _raises(_matrix(matrix=matrix), "confusion.matrix[1][2]", "must be a count")


def test_non_numbers_in_csv_are_rejected():
    _raises(",walk,run,jump\nwalk,8,two,0\nrun,1,7,2\njump,0,3,9\n", "confusion.matrix[0][1]", "'two'")


def test_unknown_class_names_are_listed_and_located():
    error = _raises(_matrix(["walk", "Run", "hop"]), "confusion.classes[1]", "'Run'", "'hop'", "'run'", "'jump'")
    assert "not in the model's manifest" in error.message and "missing" in error.message


def test_duplicate_class_names_are_rejected_with_the_second_position():
    _raises(_matrix(["walk", "run", "walk"]), "confusion.classes[2]", "'walk'", "twice")
    _raises(",walk,run,run\nwalk,8,2,0\nrun,1,7,2\nrun,0,3,9\n", "confusion.classes[2]", "header column 4")


def test_duplicate_csv_rows_are_rejected():
    _raises(",walk,run,jump\nwalk,8,2,0\nwalk,1,7,2\njump,0,3,9\n", "confusion.matrix[1]", "two rows")


def test_classes_missing_against_the_manifest_are_listed():
    two = ["walk", "run"]
    _raises(_matrix(two, [[8, 2], [1, 7]]), "confusion.classes", "missing", "'jump'")


def test_classes_without_examples_are_listed_with_the_first_row():
    matrix = [[8, 2, 0], [0, 0, 0], [0, 0, 0]]
    _raises(_matrix(matrix=matrix), "confusion.matrix[1]", "no examples", "'run'", "'jump'")


def test_a_class_never_true_in_label_lists_is_reported_on_y_true():
    _raises({"classes": MANIFEST, "y_true": [0, 0, 1], "y_pred": [0, 2, 1]}, "confusion.y_true", "'jump'")


def test_more_classes_than_the_limit_are_rejected_before_parsing_the_matrix():
    _raises({"classes": MANIFEST, "matrix": "not even read"}, "confusion.classes", "limit of 2", max_classes=2)
    _raises(",walk,run,jump\n", "confusion.classes", "limit of 2", max_classes=2)


def test_label_lists_of_different_length_are_rejected():
    _raises({"classes": MANIFEST, "y_true": [0, 1, 2], "y_pred": [0, 1]}, "confusion.y_pred", "3", "2")


def test_unknown_labels_are_listed_with_the_first_position():
    payload = {"classes": MANIFEST, "y_true": [0, 1, 2, 2], "y_pred": [0, "hop", 3, "hop"]}
    _raises(payload, "confusion.y_pred[1]", "'hop'", "3", "0..2")
    _raises({"classes": MANIFEST, "y_true": [0, True, 2], "y_pred": [0, 1, 2]}, "confusion.y_true[1]")


def test_a_payload_that_is_neither_form_is_rejected():
    _raises({"classes": MANIFEST}, "confusion.matrix", "missing")
    _raises({"classes": MANIFEST, "matrix": COUNTS, "y_true": [0]}, "confusion", "not both")
    _raises({"classes": MANIFEST, "y_true": [0]}, "confusion.y_pred", "missing")
    _raises({"classes": MANIFEST, "matrix": COUNTS, "extra": 1}, "confusion.extra", "unknown key")
    _raises({"matrix": COUNTS}, "confusion.classes", "missing")
    _raises('{"classes": ', "confusion", "not valid JSON")
    _raises("[[1, 2], [3, 4]]", "confusion", "JSON object")
    _raises("", "confusion", "CSV is empty")
    _raises(b"\xff\xfe\x00", "confusion", "UTF-8")


def test_field_prefix_follows_the_source():
    _raises(_matrix(matrix=COUNTS[:2]), "baseline.matrix", source="baseline")


def test_confusion_matrix_rejects_inconsistent_construction():
    with pytest.raises(ValueError):
        ConfusionMatrix(classes=["a", "b"], counts=np.zeros((3, 3)))
    with pytest.raises(ValueError):
        ConfusionMatrix(classes=["a", "b"], counts=np.array([[1, -1], [0, 1]]))
