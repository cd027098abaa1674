"""Users' own files read as they mean them (issue 17, items 5-10): nothing misread without a word."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from torchvat.data import (
    FeatureScaleWarning,
    from_arrays,
    load_csv,
    load_npz,
    standardize,
    warn_dominant_column,
)


def _frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.normal(size=n).round(3)})
    df["label"] = np.where(np.arange(n) % 3 == 0, -1, np.arange(n) % 2)
    return df


# ---------------------------------------------------------------- 5. the index pandas writes
def test_a_pandas_index_column_is_dropped_with_a_notice(tmp_path):
    df = _frame()
    df.to_csv(tmp_path / "plain.csv", index=False)
    df.to_csv(tmp_path / "indexed.csv")  # an unnamed first column 0..N-1
    plain = load_csv(tmp_path / "plain.csv")
    with pytest.warns(
        UserWarning, match=r"indexed\.csv: the first column has no name and holds the row numbers 0\.\.11"
    ):
        indexed = load_csv(tmp_path / "indexed.csv")
    assert indexed.input_shape == (2,)
    assert torch.equal(indexed.x_unlabeled, plain.x_unlabeled) and torch.equal(indexed.y_labeled, plain.y_labeled)


def test_an_index_of_a_filtered_or_reread_frame_is_dropped_and_a_test_file_aligned(tmp_path):
    df = _frame(20)
    filtered = df[df["a"] > -0.5]  # the index keeps gaps
    filtered.to_csv(tmp_path / "train.csv")
    pd.read_csv(tmp_path / "train.csv").iloc[:4].assign(label=[0, 1, 0, 1]).to_csv(tmp_path / "test.csv", index=False)
    assert (tmp_path / "test.csv").read_text().startswith("Unnamed: 0,a,b,label")  # the index, re-read and written
    with pytest.warns(UserWarning, match="the first column has no name") as caught:
        data = load_csv(tmp_path / "train.csv", test_path=tmp_path / "test.csv")
    assert len(caught) == 2 and f"holds the row numbers {len(filtered)} distinct integers" in str(caught[0].message)
    assert (
        data.input_shape == (2,)
        and data.x_test.tolist() == filtered[["a", "b"]].iloc[:4].astype("float32").values.tolist()
    )


def test_an_unnamed_column_that_is_not_an_index_stays_a_feature(tmp_path):
    (tmp_path / "t.csv").write_text(",b,label\n0.5,1,0\n1.5,2,1\n2.5,3,-1\n")  # not integers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_csv(tmp_path / "t.csv").input_shape == (2,)
    (tmp_path / "t.csv").write_text(",b,label\n1,1,0\n1,2,1\n2,3,-1\n")  # integers, not distinct
    assert load_csv(tmp_path / "t.csv").input_shape == (2,)
    (tmp_path / "t.csv").write_text(",b,label\n2020-01-01,1,0\n")
    with pytest.raises(ValueError, match=r"column '' \(a column without a name: an index pandas wrote\?\)"):
        load_csv(tmp_path / "t.csv")


# ---------------------------------------------------------------- 6. classes are the label values present
def test_npz_classes_are_the_label_values_present(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0, 2, 5, -1, 5, -1, 2, 0])
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(8, 2)), y=y, X_test=rng.normal(size=(3, 2)), y_test=[5, 0, 2])
    data = load_npz(tmp_path / "d.npz", unlabeled_includes_labeled=False)  # no warning: every class is labeled
    assert data.n_classes == 3 and data.classes == ["0", "2", "5"]
    assert data.y_labeled.tolist() == [0, 1, 2, 2, 1, 0] and data.y_test.tolist() == [2, 0, 1]
    assert [data.classes[c] for c in data.y_labeled.tolist()] == [str(v) for v in y[y != -1]]  # mapped back


@pytest.mark.parametrize(
    ("y", "n_classes", "classes", "codes"),
    [
        ([1, 2, 3, -1, 3, 1], 3, ["1", "2", "3"], [0, 1, 2, 2, 0]),  # labels 1..K: no class 0 never labeled
        ([0, 1, 2, -1, 2, 0], 3, None, [0, 1, 2, 2, 0]),  # 0..K-1 stay as they are
        ([10, 3, 3, -1, 10, 10], 2, ["3", "10"], [1, 0, 0, 1, 1]),  # by value, not as text
    ],
)
def test_integer_labels_map_onto_the_values_present(y, n_classes, classes, codes):
    data = from_arrays(np.arange(12.0).reshape(6, 2), y, unlabeled_includes_labeled=False)
    assert (data.n_classes, data.classes, data.y_labeled.tolist()) == (n_classes, classes, codes)


def test_given_n_classes_keeps_integer_labels_as_indices_and_bad_values_are_named():
    data = from_arrays(np.zeros((4, 2)), [0, 2, -1, 2], n_classes=4)
    assert data.n_classes == 4 and data.classes is None and data.y_labeled.tolist() == [0, 2, 2]
    with pytest.raises(ValueError, match=r"labels must be class values >= 0 or -1 for unlabeled rows, got .*\[-2\]"):
        from_arrays(np.zeros((4, 2)), [0, 2, -1, -2])


def test_a_label_value_of_the_test_set_only_is_a_class_with_a_warning():
    with pytest.warns(UserWarning, match=r"the label values \[7\] occur in y_test only"):
        data = from_arrays(np.zeros((4, 2)), [0, 2, -1, 2], X_test=np.zeros((2, 2)), y_test=[7, 2])
    assert data.classes == ["0", "2", "7"] and data.y_test.tolist() == [2, 1]


def test_csv_integer_labels_are_mapped_like_npz_labels(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n0,1,0\n1,0,5\n2,2,\n3,1,2\n4,0,5\n")
    data = load_csv(tmp_path / "t.csv", unlabeled_includes_labeled=False)
    assert data.classes == ["0", "2", "5"] and data.y_labeled.tolist() == [0, 2, 1, 2]


def _three_class_npz(path, image: bool = False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 2)).astype(np.float32)
    values = np.array([0, 2, 5])
    truth = values[np.digitize(x[:, 0], [-0.4, 0.4])]
    y = np.where(rng.random(90) < 0.4, truth, -1)
    if image:  # tiny 1x4x4 images: the first pixel carries the class
        x = np.concatenate([x, rng.normal(size=(90, 14)).astype(np.float32)], axis=1).reshape(90, 1, 4, 4)
    np.savez(path, X=x[:60], y=y[:60], X_test=x[60:], y_test=truth[60:])
    return x[60:], truth[60:]


def test_the_cli_trains_on_the_values_present_and_maps_predictions_back(tmp_path):
    from torchvat.cli import main
    from torchvat.cli.evaluate import run_evaluate
    from torchvat.runs import load_run

    x_test, y_test = _three_class_npz(tmp_path / "d.npz")
    args = ["train", "--data", str(tmp_path / "d.npz"), "--iters", "40", "--lr", "0.01", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["n_classes"] == 3 and info["classes"] == ["0", "2", "5"]  # not 6 classes, 3 never labeled
    model, data, _ = load_run(tmp_path / "run" / "last.pt")
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test))
    assert logits.shape == (30, 3)
    predicted = np.array([int(data.classes[c]) for c in logits.argmax(1).tolist()])  # back to the file's values
    result = run_evaluate(tmp_path / "run" / "last.pt", eps=[0.0], quiet=True)
    assert result.accuracy == pytest.approx(float((predicted == y_test).mean()))
    assert result.accuracy > 0.5


def test_visualize_names_the_predictions_by_the_files_label_values(tmp_path, monkeypatch):
    from torchvat.cli import main
    from torchvat.cli.visualize import run_visualize

    _three_class_npz(tmp_path / "img.npz", image=True)
    args = ["train", "--data", str(tmp_path / "img.npz"), "--method", "supervised", "--iters", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    shown = {}

    def plot(x, r, path, **kwargs):
        shown.update(kwargs)
        return path

    monkeypatch.setitem(run_visualize.__globals__, "plot_perturbation_grid", plot)
    run_visualize(tmp_path / "run" / "last.pt", n=3, quiet=True)
    assert shown["class_names"] == ["0", "2", "5"]
    assert {shown["class_names"][c] for c in shown["pred_before"] + shown["labels"]} <= {"0", "2", "5"}


# ---------------------------------------------------------------- 7. a stray value in an integer label column
def test_a_stray_value_in_an_integer_label_column_is_named_with_its_line(tmp_path):
    lines = ["a,b,label"] + [f"{i},{i % 3},{i % 3}" for i in range(8)]
    lines[5] = "4,1,7.5"  # line 6 of the file
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError,
        match=r"t\.csv, column 'label': expected integer class labels, as on the other 7 labeled lines, "
        r"got '7\.5' on line 6; .* or pass classes= to read every label as a class name",
    ):
        load_csv(tmp_path / "t.csv")


def test_a_stray_integer_among_class_names_is_named_and_classes_reads_them_all_as_names(tmp_path):
    (tmp_path / "t.csv").write_text("a,label\n1,cat\n2,dog\n3,\n4,3\n5,cat\n")
    with pytest.raises(
        ValueError, match=r"expected class names, as on the other 3 labeled lines, got the integers '3' on line 5"
    ):
        load_csv(tmp_path / "t.csv")
    data = load_csv(tmp_path / "t.csv", classes=["3", "cat", "dog"], unlabeled_includes_labeled=False)
    assert data.classes == ["3", "cat", "dog"] and data.y_labeled.tolist() == [1, 2, 0, 1]


def test_a_non_integer_npz_label_is_named_with_its_index(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((5, 2)), y=np.array([0.0, 1.0, -1.0, 7.5, 2.0]))
    with pytest.raises(ValueError, match=r"got non-integers \[7\.5\] \(the first, 7\.5, at index 3\)"):
        load_npz(tmp_path / "d.npz")
    with pytest.raises(ValueError, match=r"\(the first, 2\.5, at index 2\)"):
        from_arrays(np.zeros((4, 2)), [0, None, 2.5, 1])


# ---------------------------------------------------------------- 8. the delimiter
@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_the_delimiter_is_detected(tmp_path, sep):
    df = _frame()
    df.to_csv(tmp_path / "comma.csv", index=False)
    df.to_csv(tmp_path / "other.csv", index=False, sep=sep)
    expected = load_csv(tmp_path / "comma.csv")
    data = load_csv(tmp_path / "other.csv")
    assert torch.equal(data.x_unlabeled, expected.x_unlabeled) and torch.equal(data.y_labeled, expected.y_labeled)


def test_a_wrong_delimiter_is_named_in_the_error(tmp_path):
    _frame().to_csv(tmp_path / "t.csv", index=False, sep=";")
    with pytest.raises(
        ValueError,
        match=re.escape("the header was read as one column with the given delimiter ',', but it holds ';': ")
        + r"pass the file's delimiter as delimiter= \(--data-option delimiter=';' in the CLI\)",
    ):
        load_csv(tmp_path / "t.csv", delimiter=",")
    (tmp_path / "u.csv").write_text("a b label\n1 2 0\n")  # spaces: not a delimiter torchvat guesses
    with pytest.raises(ValueError, match="read as one column with the detected delimiter ','"):
        load_csv(tmp_path / "u.csv")


def test_a_comma_in_a_quoted_name_does_not_fool_the_detection(tmp_path):
    (tmp_path / "t.csv").write_text('"size, cm";"weight, kg";label\n1,5;2;0\n')
    with pytest.raises(ValueError, match=r"line 2, column 'size, cm': expected a number, got '1,5'"):
        load_csv(tmp_path / "t.csv")  # decimal commas are not read as numbers, but the columns are found
    (tmp_path / "t.csv").write_text('"size, cm";"weight, kg";label\n1.5;2;0\n3;4;-1\n')
    assert load_csv(tmp_path / "t.csv").input_shape == (2,)


# ---------------------------------------------------------------- 10. one raw column holding the variance
def _wine_like(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "hue": rng.uniform(0.5, 1.7, n).round(3),
            "alcohol": rng.uniform(11, 15, n).round(2),
            "proline": rng.uniform(280, 1680, n).round(0),
            "label": np.where(np.arange(n) % 4 == 0, np.arange(n) % 3, -1),
        }
    )


def test_a_column_holding_the_variance_is_named_and_standardize_is_pointed_to(tmp_path):
    _wine_like().to_csv(tmp_path / "wine.csv", index=False)
    with pytest.warns(FeatureScaleWarning) as caught:
        data = load_csv(tmp_path / "wine.csv")
    message = str(caught[0].message)
    assert re.search(r"^wine: the column 'proline' holds (99\.\d|100\.0)% of the variance of the 3 feature", message)
    assert "--preprocess standardize" in message and "torchvat.data.standardize" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_dominant_column(standardize(data).train_inputs()) < 0.5  # standardized: no warning


def test_the_variance_check_names_npz_columns_by_index_and_skips_images(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3)) * [1.0, 1.0, 50.0]
    np.savez(tmp_path / "d.npz", X=x, y=np.where(np.arange(20) % 2 == 0, np.arange(20) % 3, -1))
    with pytest.warns(FeatureScaleWarning, match=r"^d: the column X\[:, 2\] holds 99\.\d% of the variance"):
        load_npz(tmp_path / "d.npz")
    with pytest.warns(FeatureScaleWarning, match="the column 'big' holds"):  # a DataFrame's own column names
        from_arrays(pd.DataFrame(x, columns=["s", "t", "big"]), [0, 1] + [-1] * 18)
    images = np.ones((6, 1, 2, 2)) * np.array([[1.0, 1.0], [1.0, 50.0]])
    images = images * np.arange(6).reshape(6, 1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_arrays(images, [0, 1, -1, -1, -1, -1])  # images [C, H, W]: pixels, not columns of their own scale
        from_arrays(np.random.default_rng(1).normal(size=(10, 2)) * [1.0, 2.5], [0, 1] + [-1] * 8)  # 86%: no warning


def test_the_variance_check_ignores_missing_values_and_constant_data():
    x = torch.tensor([[0.0, 100.0], [1.0, float("nan")], [0.5, 300.0], [float("inf"), 200.0]])
    with pytest.warns(FeatureScaleWarning, match=r"'b' holds 100\.0%"):
        assert warn_dominant_column(x, feature_names=["a", "b"], where="w") == pytest.approx(
            (20000 / 3) / (20000 / 3 + 1 / 6)
        )
    assert warn_dominant_column(torch.ones(5, 3)) == 0.0
    with pytest.raises(ValueError, match="feature_names must name the 2 columns of X, got 3 names"):
        from_arrays(np.zeros((4, 2)), [0, 1, -1, -1], feature_names=["a", "b", "c"])


def test_the_cli_shows_the_scale_warning_once(tmp_path, capsys):
    from torchvat.cli import main

    _wine_like().to_csv(tmp_path / "wine.csv", index=False)
    args = [
        "train",
        "--data",
        str(tmp_path / "wine.csv"),
        "--iters",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "r"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("torchvat: warning: wine: the column 'proline' holds") == 1, err
