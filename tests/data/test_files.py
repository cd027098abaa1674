import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from torchvat.data import load_csv, load_image_folder, load_npz


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    y = np.array([0, 1, 2, -1, -1, -1, 0, -1, 1, -1])
    X_test = rng.normal(size=(3, 4)).astype(np.float32)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y, X_test=X_test, y_test=np.array([2, 1, 0]))
    data = load_npz(path, unlabeled_includes_labeled=False)
    assert data.name == "mine" and data.n_classes == 3
    assert torch.equal(data.x_labeled, torch.from_numpy(X[y != -1]))
    assert torch.equal(data.x_unlabeled, torch.from_numpy(X[y == -1]))
    assert torch.equal(data.x_test, torch.from_numpy(X_test))
    assert data.y_test.tolist() == [2, 1, 0]


def test_npz_missing_key_and_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(KeyError, match=r"lacks the keys \['y'\]"):
        load_npz(path)
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_npz(missing)


def test_csv_round_trip_integer_labels(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("f1,label,f2\n1.5,0,2\n3,,4\n5,1,6\n7,-1,8\n9,1,10\n")
    data = load_csv(path, unlabeled_includes_labeled=False)
    assert data.name == "table" and data.classes is None and data.n_classes == 2
    assert data.x_labeled.tolist() == [[1.5, 2.0], [5.0, 6.0], [9.0, 10.0]]
    assert data.y_labeled.tolist() == [0, 1, 1]
    assert data.x_unlabeled.tolist() == [[3.0, 4.0], [7.0, 8.0]]


def test_csv_string_labels_and_test_file(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("x;y;kind\n0;0;spam\n1;1;\n2;2;ham\n3;3;spam\n")
    test = tmp_path / "test.csv"
    test.write_text("x;y;kind\n4;4;ham\n")
    data = load_csv(train, label_column="kind", delimiter=";", test_path=test)
    assert data.classes == ["ham", "spam"]
    assert data.y_labeled.tolist() == [1, 0, 1]
    assert data.y_test.tolist() == [0] and data.x_test.tolist() == [[4.0, 4.0]]


def test_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="label_column='label' is not a column"):
        load_csv(path)
    path.write_text("a,label\n1,0\nhello,1\n")
    with pytest.raises(ValueError, match="line 3, column 'a': expected a number, got 'hello'"):
        load_csv(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        load_csv(tmp_path / "missing.csv")


def _png(path, value, size=(4, 4), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_image_folder_round_trip(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "cat" / "a.png", 255)
    _png(root / "cat" / "b.png", 255)
    _png(root / "dog" / "c.png", 0)
    _png(root / "unlabeled" / "u1.png", 51)
    _png(root / "unlabeled" / "u2.png", 102)
    (root / "unlabeled" / "notes.txt").write_text("not an image")
    _png(tmp_path / "test" / "dog" / "t.png", 0)
    data = load_image_folder(root, test_dir=tmp_path / "test", unlabeled_includes_labeled=False)
    assert data.classes == ["cat", "dog"] and data.name == "imgs"
    assert data.x_labeled.shape == (3, 1, 4, 4)
    assert data.y_labeled.tolist() == [0, 0, 1]
    assert torch.allclose(data.x_labeled.amax(dim=(1, 2, 3)), torch.tensor([1.0, 1.0, 0.0]))
    assert data.x_unlabeled.shape == (2, 1, 4, 4)
    assert torch.allclose(data.x_unlabeled[:, 0, 0, 0], torch.tensor([0.2, 0.4]))
    assert data.y_test.tolist() == [1]


def test_image_folder_rgb_and_resize(tmp_path):
    _png(tmp_path / "a" / "1.png", 10, size=(6, 4), mode="RGB")
    _png(tmp_path / "b" / "2.png", 20, size=(3, 3), mode="RGB")
    with pytest.raises(ValueError, match="pass size= to resize"):
        load_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="no unlabeled"):
        data = load_image_folder(tmp_path, size=5)
    assert data.x_labeled.shape == (2, 3, 5, 5)
    assert torch.allclose(data.x_labeled[:, 2, 0, 0], torch.tensor([245.0, 235.0]) / 255)


def test_image_folder_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_image_folder(tmp_path / "does-not-exist")
    _png(tmp_path / "a" / "1.png", 1)
    with pytest.raises(FileNotFoundError, match="no-test"):
        load_image_folder(tmp_path, test_dir="no-test")


def test_csv_missing_value_spellings_mark_unlabeled_rows(tmp_path):
    # Python's csv module and numpy write float labels as 0.0 / nan; R writes NA
    path = tmp_path / "floats.csv"
    path.write_text("a,b,label\n0.1,0.2,0.0\n0.3,0.4,nan\n0.5,0.6,1.0\n0.7,0.8,NA\n0.9,1.0,<NA>\n1.1,1.2,-1.0\n")
    with pytest.warns(UserWarning, match=r"the labels \['<NA>', 'NA', 'nan'\] were read as unlabeled rows"):
        data = load_csv(path, unlabeled_includes_labeled=False)
    assert data.n_classes == 2 and data.classes is None
    assert data.y_labeled.tolist() == [0, 1]
    assert data.n_unlabeled == 4
    names = tmp_path / "names.csv"
    names.write_text("a,label\n1,cat\n2,NaN\n3,dog\n4,null\n5,None\n")
    with pytest.warns(UserWarning, match="were read as unlabeled rows"):
        data = load_csv(names, unlabeled_includes_labeled=False)
    assert data.classes == ["cat", "dog"] and data.n_unlabeled == 3


def test_csv_empty_feature_cell_is_nan_only_when_nonfinite_is_allowed(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,label\n1,,0\n2,3,1\n4,5,-1\n")
    with pytest.raises(ValueError, match="line 2, column 'b': expected a number, got ''"):
        load_csv(path)
    data = load_csv(path, allow_nonfinite=True, unlabeled_includes_labeled=False)
    assert torch.isnan(data.x_labeled[0, 1]) and data.x_labeled[1].tolist() == [2.0, 3.0]


def test_image_folder_keeps_16_bit_and_float_images_in_range(tmp_path):
    ramp16 = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(ramp16).save(tmp_path / c / "x.png")
    with pytest.warns(UserWarning, match="no unlabeled"):
        data = load_image_folder(tmp_path)
    assert data.x_labeled.shape == (2, 1, 8, 8)
    expected = torch.from_numpy(ramp16.astype(np.float32) / 65535.0)
    assert torch.allclose(data.x_labeled[0, 0], expected)  # PIL's convert("L") would clip to 0..255
    float_root = tmp_path / "float"
    ramp = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    for c in ("a", "b"):
        (float_root / c).mkdir(parents=True)
        Image.fromarray(ramp, mode="F").save(float_root / c / "x.tif")
    with pytest.warns(UserWarning, match="no unlabeled"):
        data = load_image_folder(float_root, mode="RGB")
    assert data.x_labeled.shape == (2, 3, 4, 4)
    assert torch.allclose(data.x_labeled[1, 2], torch.from_numpy(ramp))
    Image.fromarray(ramp * 7, mode="F").save(float_root / "b" / "x.tif")
    with pytest.raises(ValueError, match=r"floating-point image \(PIL mode 'F'\) with values in \[0.0, 7.0\]"):
        load_image_folder(float_root)


def test_image_folder_test_dir_inside_root_is_not_a_class(tmp_path):
    for c in ("cat", "dog"):
        _png(tmp_path / c / "1.png", 10)
        _png(tmp_path / "test" / c / "t.png", 20)
    _png(tmp_path / "unlabeled" / "u.png", 30)
    data = load_image_folder(tmp_path, test_dir="test")
    assert data.classes == ["cat", "dog"] and data.n_classes == 2
    assert sorted(data.y_test.tolist()) == [0, 1]


def test_image_folder_refuses_an_empty_class_and_test_images_of_another_size(tmp_path):
    _png(tmp_path / "cat" / "1.png", 10)
    _png(tmp_path / "unlabeled" / "u.png", 30)
    (tmp_path / "dog").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*dog has no images"):
        load_image_folder(tmp_path)
    _png(tmp_path / "dog" / "2.png", 10)
    _png(tmp_path.parent / (tmp_path.name + "-test") / "dog" / "t.png", 10, size=(6, 6))
    with pytest.raises(ValueError, match=r"test images are \(6, 6\) .* training images \(4, 4\); pass size="):
        load_image_folder(tmp_path, test_dir=tmp_path.parent / (tmp_path.name + "-test"))


def test_csv_test_file_columns_are_matched_to_the_training_columns_by_name(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("height,weight,label\n180,80,0\n160,50,1\n170,65,-1\n")
    test = tmp_path / "test.csv"
    test.write_text("weight,label,height\n75,0,185\n")  # another tool's column order
    data = load_csv(train, test_path=test)
    assert data.x_labeled[0].tolist() == [180.0, 80.0] and data.x_test.tolist() == [[185.0, 75.0]]
    test.write_text("foo,bar,label\n1,2,0\n")
    with pytest.raises(
        ValueError,
        match=r"test_path .*test\.csv must have the feature columns of .*train\.csv \['height', 'weight'\], "
        r"got \['foo', 'bar'\]: missing \['height', 'weight'\], extra \['foo', 'bar'\]",
    ):
        load_csv(train, test_path=test)
    test.write_text("height,weight,age,label\n185,75,30,0\n")
    with pytest.raises(ValueError, match=r"missing \[\], extra \['age'\]"):
        load_csv(train, test_path=test)
    # repeated names cannot align columns: they stay positional, and the counts must agree
    train.write_text("x,x,label\n1,2,0\n3,4,1\n5,6,-1\n")
    test.write_text("x,x,label\n7,8,1\n")
    assert load_csv(train, test_path=test).x_test.tolist() == [[7.0, 8.0]]
    test.write_text("x,x,x,label\n7,8,9,1\n")
    with pytest.raises(ValueError, match=r"must have the 2 feature columns of .*train\.csv, got 3: \['x', 'x', 'x'\]"):
        load_csv(train, test_path=test)


def test_csv_classes_keep_a_label_spelled_like_a_missing_value(tmp_path):
    path = tmp_path / "regions.csv"
    path.write_text("x,label\n1,EU\n2,NA\n3,EU\n4,NA\n5,\n")  # NA: North America
    with pytest.warns(UserWarning, match=r"the labels \['NA'\] were read as unlabeled rows"):
        assert load_csv(path).classes == ["EU"]
    test = tmp_path / "test.csv"
    test.write_text("x,label\n6,NA\n7,EU\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_csv(path, classes=["EU", "NA"], test_path=test, unlabeled_includes_labeled=False)
    assert data.classes == ["EU", "NA"] and data.y_labeled.tolist() == [0, 1, 0, 1]
    assert data.n_unlabeled == 1 and data.y_test.tolist() == [1, 0]


def test_csv_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("label,a,b\ncat,1,2\n,3,4\ndog,5,6\n", encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    data = load_csv(path, unlabeled_includes_labeled=False)
    assert data.classes == ["cat", "dog"] and data.x_labeled.tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_csv_errors_name_the_line_of_the_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n\n\n3,4,1\n5,x,1\n")
    with pytest.raises(ValueError, match=r"t\.csv, line 6, column 'b': expected a number, got 'x'"):
        load_csv(path)
    path.write_text('a,b,label\n1,2,"first\nline"\n\n3,4\n')
    with pytest.raises(ValueError, match=r"t\.csv, line 5: expected 3 fields, got 2"):
        load_csv(path)
    path.write_text('a,b,label\n1,2,"a\nb"\n3,?,1\n')
    with pytest.raises(ValueError, match=r"line 4, column 'b': expected a number, got '\?'"):
        load_csv(path)


def test_csv_integer_labels_outside_int64_are_named(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,label\n1,0\n2,1e30\n3,-1\n")
    with pytest.raises(
        ValueError, match=r"big\.csv, line 3, column 'label': expected an integer class index in \[.*\], got '1e30'"
    ):
        load_csv(path)


def test_image_folder_refuses_a_test_dir_without_images_in_class_sub_folders(tmp_path):
    root = tmp_path / "train"
    for c in ("cat", "dog"):
        _png(root / c / "1.png", 10)
    _png(root / "unlabeled" / "u.png", 30)
    loose = tmp_path / "loose"
    for i in range(3):
        _png(loose / f"{i}.png", 20)
    with pytest.raises(
        ValueError,
        match=r"test_dir .*loose holds no images in class sub-folders: expected .*loose/<class name>/<image> "
        r"with class names from \['cat', 'dog'\]; its 3 images lie directly in it",
    ):
        load_image_folder(root, test_dir=loose)
    nested = tmp_path / "nested"
    _png(nested / "cat" / "batch1" / "0.png", 20)
    with pytest.raises(ValueError, match=r"test_dir .*nested holds no images in class sub-folders: .*'dog'\]$"):
        load_image_folder(root, test_dir=nested)
