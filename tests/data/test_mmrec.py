import numpy as np
import pandas as pd
import pytest
import torch

from sea_pyg.data import DatasetFormatError, describe, item_features, read_mmrec, write_mmrec
from sea_pyg.data.mmrec import EDGE_TYPE, REV_EDGE_TYPE


def _frame(rows):
    return pd.DataFrame(rows, columns=["userID", "itemID", "x_label"])


# u0: train 0,1 ; valid 2 ; test 3
# u1: train 1,2 ; valid 0 ; test 4
# u2: only valid/test rows (cold start) -> dropped
GOOD = [
    (0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2),
    (1, 1, 0), (1, 2, 0), (1, 0, 1), (1, 4, 2),
    (2, 3, 1), (2, 5, 2),
]  # fmt: skip


def _write(tmp_path, rows=GOOD, features=None, name="toy"):
    n_items = max(r[1] for r in rows) + 1
    if features is None:
        rng = np.random.default_rng(0)
        features = {
            "image": rng.random((n_items, 6)),
            "text": rng.standard_normal((n_items, 4)).astype(np.float32),
        }
    write_mmrec(tmp_path, name, _frame(rows), features)
    return tmp_path


def test_round_trip_layout(tmp_path):
    folder = _write(tmp_path)
    data = read_mmrec(folder)
    assert data.name == "toy"
    assert data.modalities == ["image", "text"]
    assert data["user"].num_nodes == 3 and data["item"].num_nodes == 6  # max id + 1, all splits
    store = data[EDGE_TYPE]
    assert store.edge_index.tolist() == [[0, 0, 1, 1], [0, 1, 1, 2]]
    assert torch.equal(data[REV_EDGE_TYPE].edge_index, store.edge_index.flip(0))
    # cold-start user 2 is filtered out of valid/test; item 5 keeps its node and feature row.
    assert store.val_edge_index.tolist() == [[0, 1], [2, 0]]
    assert store.test_edge_index.tolist() == [[0, 1], [3, 4]]
    feats = item_features(data)
    assert feats["image"].dtype == torch.float32 and feats["image"].shape == (6, 6)
    assert feats["text"].shape == (6, 4)
    assert "6 items" in describe(data)


def test_cold_start_filter_can_be_disabled(tmp_path):
    data = read_mmrec(_write(tmp_path), filter_cold_start_users=False)
    assert data[EDGE_TYPE].val_edge_index.size(1) == 3


def test_modalities_selection_and_single_modality(tmp_path):
    folder = _write(tmp_path)
    data = read_mmrec(folder, modalities=["text"])
    assert data.modalities == ["text"] and "x_image" not in data["item"]
    assert read_mmrec(folder, modalities=[]).modalities == []


def test_extra_columns_ignored(tmp_path):
    df = _frame(GOOD)
    df.insert(2, "rating", 5.0)
    df["timestamp"] = 123
    write_mmrec(tmp_path, "toy", df, {"text": np.ones((6, 2))})
    assert read_mmrec(tmp_path)[EDGE_TYPE].edge_index.size(1) == 4


# ---- bad input: every error names the file and the problem ----------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        read_mmrec(tmp_path / "nope")


def test_missing_inter_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"missing file.*\*\.inter"):
        read_mmrec(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"missing file .*baby\.inter"):
        read_mmrec(tmp_path, name="baby")


def test_missing_feature_file(tmp_path):
    folder = _write(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"missing file .*audio_feat\.npy"):
        read_mmrec(folder, modalities=["audio"])


def test_missing_column(tmp_path):
    (tmp_path / "toy.inter").write_text("userID\titemID\n0\t1\n")
    with pytest.raises(DatasetFormatError, match=r"toy\.inter: missing column\(s\) \['x_label'\]"):
        read_mmrec(tmp_path)


def test_wrong_separator_reports_missing_columns(tmp_path):
    (tmp_path / "toy.inter").write_text("userID,itemID,x_label\n0,1,0\n")
    with pytest.raises(DatasetFormatError, match="tab-separated"):
        read_mmrec(tmp_path)


def test_x_label_out_of_range(tmp_path):
    rows = [*GOOD, (0, 4, 3)]
    _write(tmp_path, rows)
    with pytest.raises(
        DatasetFormatError, match=r"toy\.inter: x_label must be 0.*found 3 at data row 11"
    ):
        read_mmrec(tmp_path)


def test_negative_ids(tmp_path):
    rows = [*GOOD, (-1, 2, 0)]
    (tmp_path / "toy.inter").write_text(
        "userID\titemID\tx_label\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n"
    )
    with pytest.raises(
        DatasetFormatError, match=r"toy\.inter: column userID must hold non-negative"
    ):
        read_mmrec(tmp_path)


def test_non_integer_ids(tmp_path):
    (tmp_path / "toy.inter").write_text("userID\titemID\tx_label\n0\tB00X\t0\n")
    with pytest.raises(DatasetFormatError, match=r"column itemID must hold integers, found 'B00X'"):
        read_mmrec(tmp_path)
    (tmp_path / "toy.inter").write_text("userID\titemID\tx_label\n0.5\t1\t0\n")
    with pytest.raises(DatasetFormatError, match=r"column userID must hold integers"):
        read_mmrec(tmp_path)


def test_empty_value(tmp_path):
    (tmp_path / "toy.inter").write_text("userID\titemID\tx_label\n0\t\t0\n")
    with pytest.raises(DatasetFormatError, match=r"column itemID has an empty/NaN value"):
        read_mmrec(tmp_path)


def test_feature_rows_mismatch(tmp_path):
    _write(tmp_path, features={"image": np.ones((5, 3))})
    with pytest.raises(DatasetFormatError, match=r"image_feat\.npy: has 5 rows .* implies 6 items"):
        read_mmrec(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_feature_nan_inf(tmp_path, bad):
    feats = np.ones((6, 3))
    feats[4, 1] = bad
    _write(tmp_path, features={"text": feats})
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: contains NaN or inf .*row 4"):
        read_mmrec(tmp_path)


def test_feature_not_2d(tmp_path):
    _write(tmp_path, features={"text": np.ones((6, 3))})
    np.save(tmp_path / "text_feat.npy", np.ones(6))
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: features must be a 2-D array"):
        read_mmrec(tmp_path)


def test_feature_not_numeric_or_pickled(tmp_path):
    _write(tmp_path, features={"text": np.ones((6, 3))})
    np.save(tmp_path / "text_feat.npy", np.array([["a", "b"]] * 6))
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: features must be a numeric"):
        read_mmrec(tmp_path)
    # object arrays need pickle: refused with a clear message, never unpickled
    np.save(tmp_path / "text_feat.npy", np.array([{"x": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: cannot be read without pickle"):
        read_mmrec(tmp_path)


def test_feature_not_npy(tmp_path):
    _write(tmp_path, features={"text": np.ones((6, 3))})
    (tmp_path / "text_feat.npy").write_text("hello")
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy"):
        read_mmrec(tmp_path)


@pytest.mark.parametrize("label,split", [(1, "validation"), (2, "test"), (0, "training")])
def test_empty_split(tmp_path, label, split):
    rows = [r for r in GOOD if r[2] != label]
    if label == 0:
        rows = [(0, 0, 1), (0, 1, 2)]
    _write(tmp_path, rows)
    with pytest.raises(DatasetFormatError, match=f"the {split} split is empty"):
        read_mmrec(tmp_path)


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "toy.inter").write_text("")
    with pytest.raises(DatasetFormatError, match=r"toy\.inter is empty"):
        read_mmrec(tmp_path)
    (tmp_path / "toy.inter").write_text("userID\titemID\tx_label\n")
    with pytest.raises(DatasetFormatError, match="no interaction rows"):
        read_mmrec(tmp_path)


def test_several_inter_files_need_a_name(tmp_path):
    _write(tmp_path, name="a")
    _write(tmp_path, name="b")
    with pytest.raises(DatasetFormatError, match="several .inter files"):
        read_mmrec(tmp_path)
    assert read_mmrec(tmp_path, name="b").name == "b"


def test_write_is_atomic_on_failure(tmp_path):
    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_mmrec(tmp_path, "toy", Boom(_frame(GOOD)), {})
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temp file left


def test_write_id_maps_and_extra_files(tmp_path):
    users, items = ["ua", "ub", "uc"], [f"asin{i}" for i in range(6)]
    extra = {"notes.txt": "hé\n", "blob.bin": b"\x00\x01"}
    write_mmrec(
        tmp_path, "toy", _frame(GOOD), {}, raw_ids={"user": users, "item": items}, extra_files=extra
    )
    u_map = (tmp_path / "u_id_mapping.csv").read_text()
    assert u_map == "user_id\tuserID\nua\t0\nub\t1\nuc\t2\n"  # MMRec's layout
    assert (tmp_path / "i_id_mapping.csv").read_text().splitlines()[:2] == [
        "asin\titemID",
        "asin0\t0",
    ]
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "hé\n"
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    data = read_mmrec(tmp_path)
    assert data["user"].raw_id == users and data["item"].raw_id == items

    only_items = tmp_path / "items"
    write_mmrec(only_items, "toy", _frame(GOOD), {}, raw_ids={"item": items})
    assert not (only_items / "u_id_mapping.csv").exists()
    assert read_mmrec(only_items)["item"].raw_id == items


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"raw_ids": {"users": ["a"]}}, "raw_ids keys"),
        ({"raw_ids": {"user": ["a", "b"]}}, r"raw_ids\['user'\] has 2 entries .* need 3"),
        ({"extra_files": {"sub/x.txt": "x"}}, "bad extra file name"),
    ],
)
def test_write_id_maps_and_extra_files_are_checked(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_mmrec(tmp_path, "toy", _frame(GOOD), {}, **kwargs)
    assert list(tmp_path.iterdir()) == []  # checked before anything is written
