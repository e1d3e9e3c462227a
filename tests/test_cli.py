"""The CLI: bad inputs end with exit code 2 and one line naming the field; nothing is written before validation."""
import json

import pytest

from service.cli import main


@pytest.fixture(scope="module")
def reference_bundle(tmp_path_factory, reference):
    from workers.engine.reference.train import write_reference

    return write_reference(reference, tmp_path_factory.mktemp("ref"))


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_missing_bundle_exits_2_naming_the_field(capsys, tmp_path):
    code, err = run(capsys, "audit", "--model", str(tmp_path / "nope.zip"), "--confusion", "x.json", "--embedded")
    assert code == 2 and len(err) == 1 and "[model]" in err[0]


def test_unknown_class_in_visualize_exits_2(capsys, tmp_path, reference_bundle):
    bundle, _ = reference_bundle
    code, err = run(capsys, "visualize", "--model", str(bundle), "--classes", "Nope", "--out", str(tmp_path / "v"))
    assert code == 2 and "[classes]" in err[0] and "Nope" in err[0]
    assert not (tmp_path / "v").exists()


def test_bad_confusion_matrix_exits_2_and_writes_nothing(capsys, tmp_path, reference_bundle):
    bundle, confusion = reference_bundle
    bad = json.loads(confusion.read_text())
    bad["matrix"][3][1] = -4
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code, err = run(capsys, "audit", "--model", str(bundle), "--confusion", str(path), "--embedded",
                    "--report", str(tmp_path / "r"))
    assert code == 2 and "confusion.matrix[3]" in err[0]
    assert not (tmp_path / "r").exists()


def test_unknown_explicit_pair_exits_2(capsys, tmp_path, reference_bundle):
    bundle, confusion = reference_bundle
    code, err = run(capsys, "audit", "--model", str(bundle), "--confusion", str(confusion), "--embedded",
                    "--pairs", "BarSweepLeft:Nope", "--json", str(tmp_path / "o.json"))
    assert code == 2 and "pairs" in err[0]


def test_pickle_checkpoint_is_refused_with_export_hint(capsys, tmp_path):
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    code, err = run(capsys, "visualize", "--model", str(tmp_path / "model.pt"), "--classes", "a",
                    "--out", str(tmp_path / "v"))
    assert code == 2 and ("ONNX" in err[0] or "onnx" in err[0])


def test_summary_shows_each_flag_with_its_stream(capsys):
    from service.cli import print_summary

    report = {"audit": {"model": {"name": "m", "version": "v"}}, "pairs": [
        {"rank": 1, "a": "A", "b": "B", "confusion": {"a_as_b": 0.5, "b_as_a": 0.0},
         "flags": [{"code": "LOCALIZED_CUE", "stream": "appearance", "severity": "medium"},
                   {"code": "MOTION_ONLY_SEPARATION", "stream": "motion", "severity": "low"},
                   {"code": "SHARED_EVIDENCE", "stream": None, "severity": "medium"}]}]}
    print_summary(report)
    out = "".join(capsys.readouterr().out.split())  # the table may fold long cells
    assert "LOCALIZED_CUE[appearance]" in out and "MOTION_ONLY_SEPARATION[motion]" in out and "SHARED_EVIDENCE" in out


@pytest.mark.parametrize("argv, field", [
    (["audit", "--model", "m.zip", "--confusion", "c.json", "--steps", "0"], "steps"),
    (["audit", "--model", "m.zip"], "confusion"),
    (["demo-data", "--out", "x", "--head", "pooled"], "head"),
    (["visualize", "--model", "m.zip", "--classes", ",", "--out", "v"], "classes"),
    (["no-such-command"], "command"),
])
def test_bad_arguments_exit_2_with_one_line_naming_the_argument(capsys, argv, field):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert len(err) == 1 and f"error [{field}]:" in err[0] and "usage:" not in err[0]


def test_visualize_keeps_every_seed_of_every_level(capsys, tmp_path, reference_bundle):
    bundle, _ = reference_bundle
    out = tmp_path / "v"
    code = main(["visualize", "--model", str(bundle), "--classes", "DiscSlideRight", "--levels", "2", "--seeds", "2",
                 "--steps", "2", "--out", str(out)])
    assert code == 0
    gifs = sorted(p.name for p in (out / "clips").glob("DiscSlideRight__appearance__*.gif"))
    assert gifs == [f"DiscSlideRight__appearance__k{k}__s{s}.gif" for k in range(2) for s in range(2)]
    summary = json.loads((out / "visualizations.json").read_text())
    assert sorted((v["level"], v["seed"]) for v in summary) == [(k, s) for k in range(2) for s in range(2)]
