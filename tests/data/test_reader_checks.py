"""The reader's checks of a dataset folder: ids without gaps, repeated rows and pairs in two
splits (warned, kept), truncated or oversized files, paths that are not regular files."""

import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from sea_pyg.data import DatasetFormatError, read_mmrec, write_mmrec
from sea_pyg.data.files import MAX_FILE_BYTES_ENV, DatasetWarning, max_file_bytes, read_npy
from sea_pyg.data.mmrec import EDGE_TYPE

# u0: train 0,1 ; valid 2 ; test 3 -- u1: train 1,2 ; valid 0 ; test 4 -- u2: train 5, 0 ;
# valid 4 ; test 1
ROWS = [
    (0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2),
    (1, 1, 0), (1, 2, 0), (1, 0, 1), (1, 4, 2),
    (2, 5, 0), (2, 0, 0), (2, 4, 1), (2, 1, 2),
]  # fmt: skip


def write_inter(folder, lines, name="toy"):
    """An interaction file from raw text lines (after the header)."""
    text = "userID\titemID\tx_label\n" + "".join(f"{line}\n" for line in lines)
    (folder / f"{name}.inter").write_text(text)
    return folder / f"{name}.inter"


def write_rows(folder, rows, features=True):
    n_items = max(r[1] for r in rows) + 1
    feats = {"text": np.arange(n_items * 3, dtype=np.float32).reshape(n_items, 3)}
    write_mmrec(
        folder,
        "toy",
        pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]),
        feats if features else {},
    )
    return folder


def read_quietly(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        return read_mmrec(folder, **kwargs)


# ---- ids: 0 .. n-1 without gaps, as MMRec numbers them -----------------------------------------


def test_user_id_far_beyond_the_users_is_an_error_not_phantom_users(tmp_path):
    # 60 users 0..59 with 3 rows each, plus one row of user 100000: 99,940 ids never occur
    lines = [f"{u}\t{i}\t{s}" for u in range(60) for i, s in ((0, 0), (1, 1), (2, 2))]
    write_inter(tmp_path, [*lines, "100000\t0\t0"])
    with pytest.raises(DatasetFormatError) as err:
        read_mmrec(tmp_path)
    msg = str(err.value)
    assert "toy.inter: column userID must number the users 0, 1, 2, ... without gaps" in msg
    assert "the largest userID is 100000 (data row 181)" in msg
    assert "only 61 distinct ids occur, so 99,940 ids in 0 .. 100000 have no interaction" in msg
    assert "(first: 60, 61, 62, 63, 64)" in msg and "pandas.factorize" in msg


@pytest.mark.parametrize(
    "written, shown",
    [
        (str(2**40), "1099511627776"),  # was a 1 TiB allocation (MemoryError)
        ("100000000000000000000", "100000000000000000000"),  # was an overflowed int64
        ("1e20", "1e20"),
        (str(2**64 + 5), str(2**64 + 5)),  # beyond uint64
    ],
)
def test_huge_ids_are_reported_as_written_without_allocating(tmp_path, written, shown):
    write_inter(tmp_path, ["0\t0\t0", "0\t1\t1", "0\t2\t2", f"{written}\t1\t0"])
    start = time.perf_counter()
    with pytest.raises(DatasetFormatError) as err:
        read_mmrec(tmp_path)
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert f"the largest userID is {shown} (data row 4)" in msg
    missing = int(float(written)) + 1 - 2 if "e" in written else int(written) + 1 - 2
    assert f"so {missing:,} ids in 0 .. " in msg
    assert "-9223372036854775808" not in msg


def test_item_gap_in_the_middle(tmp_path):
    rows = [r for r in ROWS if r[1] != 3] + [(0, 6, 2)]  # item 3 never occurs
    write_rows(tmp_path, rows, features=False)
    with pytest.raises(DatasetFormatError) as err:
        read_mmrec(tmp_path)
    msg = str(err.value)
    assert "column itemID must number the items" in msg and "largest itemID is 6" in msg
    assert "so 1 ids in 0 .. 6 have no interaction (first: 3)" in msg
    assert "reorder the rows of the feature files the same way" in msg


def test_contiguous_ids_are_counted_over_all_splits(tmp_path):
    # item 5 occurs only in the test row of a cold-start user: no gap, a node and a feature row
    rows = [r for r in ROWS if r[0] != 2] + [(2, 5, 2), (2, 4, 1)]
    data = read_quietly(write_rows(tmp_path, rows))
    assert data["user"].num_nodes == 3 and data["item"].num_nodes == 6
    assert data[EDGE_TYPE].test_edge_index.size(1) == 2  # user 2 dropped (cold start)


@pytest.mark.parametrize(
    "cell, found",
    [("nan", "has an empty/NaN value"), ("inf", "must hold integers, found 'inf'"),
     ("1.5", "must hold integers, found '1.5'"), ("1e400", "must hold integers, found '1e400'")],
)  # fmt: skip
def test_non_integer_values_are_quoted_as_written(tmp_path, cell, found):
    write_inter(tmp_path, ["0\t0\t0", f"0\t{cell}\t1", "0\t2\t2"])
    with pytest.raises(DatasetFormatError, match=f"column itemID {found}"):
        read_mmrec(tmp_path)


def test_boolean_column_is_not_read_as_ids(tmp_path):
    write_inter(tmp_path, ["0\tTrue\t0", "0\tFalse\t1", "0\tTrue\t2"])
    with pytest.raises(DatasetFormatError, match="column itemID must hold integers, found True"):
        read_mmrec(tmp_path)


def test_x_label_too_large_is_quoted_as_written(tmp_path):
    write_inter(tmp_path, ["0\t0\t0", "0\t1\t1", "0\t2\t100000000000000000000"])
    with pytest.raises(DatasetFormatError, match=r"found 100000000000000000000 at data row 3"):
        read_mmrec(tmp_path)


# ---- repeated rows and pairs in two splits: warned, kept (as MMRec) ---------------------------


def test_repeated_rows_warn_and_are_kept(tmp_path):
    write_rows(tmp_path, [*ROWS, (1, 2, 0), (1, 2, 0), (0, 3, 2)])
    with pytest.warns(DatasetWarning) as record:
        data = read_mmrec(tmp_path)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "toy.inter: 3 repeated row(s)" in msg
    assert "first at data row 13: userID 1, itemID 2, training" in msg and "kept" in msg
    store = data[EDGE_TYPE]
    assert store.edge_index.size(1) == 6 + 2  # both repeats are training rows
    assert store.test_edge_index.size(1) == 3 + 1
    assert data.format_warnings == [msg]


def test_pair_in_two_splits_warns_and_is_kept(tmp_path):
    write_rows(tmp_path, [*ROWS, (0, 2, 2), (2, 0, 2)])  # (0,2) valid+test, (2,0) train+test
    with pytest.warns(DatasetWarning) as record:
        data = read_mmrec(tmp_path)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "toy.inter: 2 (userID, itemID) pair(s) occur in more than one split" in msg
    assert "(first: userID 0, itemID 2 in validation and test)" in msg
    assert "masked at evaluation" in msg
    assert data[EDGE_TYPE].test_edge_index.size(1) == 3 + 2


def test_warnings_can_be_made_errors(tmp_path):
    write_rows(tmp_path, [*ROWS, (1, 2, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        with pytest.raises(DatasetWarning, match="repeated row"):
            read_mmrec(tmp_path)


def test_clean_folder_has_no_warning_and_no_format_warnings(tmp_path):
    data = read_quietly(write_rows(tmp_path, ROWS))
    assert "format_warnings" not in data


# ---- .npy files: header first, truncation, trailing bytes, float32 range ----------------------


def npy_bytes(arr):
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("keep", [3, 9, 40, 130, -1])
def test_truncated_npy_says_truncated(tmp_path, keep):
    write_rows(tmp_path, ROWS)
    data = npy_bytes(np.ones((6, 3)))
    (tmp_path / "text_feat.npy").write_bytes(data[:keep])
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: truncated"):
        read_mmrec(tmp_path)


def test_truncated_npy_message_gives_the_sizes(tmp_path):
    write_rows(tmp_path, ROWS)
    data = npy_bytes(np.ones((6, 3)))
    (tmp_path / "text_feat.npy").write_bytes(data[:-8])
    with pytest.raises(DatasetFormatError) as err:
        read_mmrec(tmp_path)
    assert f"but the file has only {len(data) - 8} bytes" in str(err.value)
    assert "(6, 3) float64 array" in str(err.value)


def test_npy_with_trailing_bytes(tmp_path):
    write_rows(tmp_path, ROWS)
    (tmp_path / "text_feat.npy").write_bytes(npy_bytes(np.ones((6, 3))) + b"junk")
    with pytest.raises(DatasetFormatError, match=r"has 4 bytes after the \(6, 3\) float64 array"):
        read_mmrec(tmp_path)


def test_npy_header_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    write_rows(tmp_path, ROWS)
    data = npy_bytes(np.ones((6, 3)))
    header = data.replace(b"(6, 3)", b"(6, 1099511627776)")  # same length header, 48 TiB
    (tmp_path / "text_feat.npy").write_bytes(header)
    start = time.perf_counter()
    with pytest.raises(DatasetFormatError, match="truncated: its header declares a"):
        read_mmrec(tmp_path)
    assert time.perf_counter() - start < 2.0
    # the wrong row count is reported from the header, before the size
    (tmp_path / "text_feat.npy").write_bytes(data.replace(b"(6, 3)", b"(9, 3)"))
    with pytest.raises(DatasetFormatError, match=r"has 9 rows but the interaction file toy\.inter"):
        read_mmrec(tmp_path)


def test_npy_fortran_order_and_big_endian_load(tmp_path):
    write_rows(tmp_path, ROWS)
    arr = np.arange(18, dtype=">f8").reshape(6, 3)
    np.save(tmp_path / "text_feat.npy", np.asfortranarray(arr))
    x = read_quietly(tmp_path)["item"].x_text
    assert x.tolist() == arr.astype(np.float32).tolist()


def test_features_beyond_float32_range(tmp_path):
    feats = np.ones((6, 3))
    feats[2, 1] = 1e300
    write_mmrec(tmp_path, "toy", pd.DataFrame(ROWS, columns=["userID", "itemID", "x_label"]), {})
    np.save(tmp_path / "text_feat.npy", feats)
    with pytest.raises(
        DatasetFormatError, match=r"text_feat\.npy: holds values beyond the float32"
    ):
        read_mmrec(tmp_path)


def test_read_npy_header_check_runs_before_the_data_is_read(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.ones((4, 2), dtype=np.float32))
    seen = []
    assert read_npy(path, check=lambda shape, dtype: seen.append((shape, dtype))).shape == (4, 2)
    assert seen == [((4, 2), np.dtype(np.float32))]


# ---- paths that are not regular files, and the size limit ------------------------------------


@pytest.mark.parametrize("file", ["toy.inter", "text_feat.npy"])
def test_directory_named_like_a_data_file(tmp_path, file):
    write_rows(tmp_path, ROWS)
    (tmp_path / file).unlink()
    (tmp_path / file).mkdir()
    with pytest.raises(DatasetFormatError, match=f"{file}: is a directory, not a file"):
        read_mmrec(tmp_path, name="toy")


@pytest.mark.parametrize("file", ["toy.inter", "text_feat.npy"])
def test_symlink_loop_and_dangling_link(tmp_path, file):
    write_rows(tmp_path, ROWS)
    (tmp_path / file).unlink()
    os.symlink(tmp_path / file, tmp_path / file)  # points at itself
    with pytest.raises(DatasetFormatError, match=f"{file}: is a symbolic link loop"):
        read_mmrec(tmp_path, name="toy")
    (tmp_path / file).unlink()
    os.symlink(tmp_path / "gone", tmp_path / file)
    with pytest.raises(
        DatasetFormatError, match=f"{file}: is a symbolic link to .*gone.*not exist"
    ):
        read_mmrec(tmp_path, name="toy")


def test_fifo_named_like_a_data_file_does_not_block(tmp_path):
    write_rows(tmp_path, ROWS)
    (tmp_path / "text_feat.npy").unlink()
    os.mkfifo(tmp_path / "text_feat.npy")
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: is a FIFO"):
        read_mmrec(tmp_path)


def test_dataset_folder_is_a_symlink_loop(tmp_path):
    os.symlink(tmp_path / "d", tmp_path / "d")
    with pytest.raises(DatasetFormatError, match="dataset folder .*d is a symbolic link loop"):
        read_mmrec(tmp_path / "d")


def test_id_map_that_is_a_directory_warns(tmp_path):
    write_rows(tmp_path, ROWS)
    (tmp_path / "u_id_mapping.csv").mkdir()
    with pytest.warns(
        DatasetWarning, match=r"ignoring id map: .*u_id_mapping\.csv: is a directory"
    ):
        data = read_mmrec(tmp_path)
    assert "raw_id" not in data["user"]


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    write_rows(tmp_path, ROWS)
    size = (tmp_path / "text_feat.npy").stat().st_size
    with pytest.raises(DatasetFormatError) as err:
        read_mmrec(tmp_path, max_file_bytes=size - 1)
    msg = str(err.value)
    assert f"text_feat.npy: the feature file is {size:,} bytes, more than the limit of" in msg
    assert "checked before reading it whole" in msg and MAX_FILE_BYTES_ENV in msg
    assert read_quietly(tmp_path, max_file_bytes=size)["item"].x_text.shape == (6, 3)
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, "50")
    with pytest.raises(DatasetFormatError, match=r"toy\.inter: the interaction file is"):
        read_mmrec(tmp_path)
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_FILE_BYTES_ENV} must be a positive number"):
        max_file_bytes()
    with pytest.raises(ValueError, match="`max_file_bytes` must be a positive"):
        read_mmrec(tmp_path, max_file_bytes=0)


# ---- unreadable tables --------------------------------------------------------------------


def test_inter_not_utf8(tmp_path):
    (tmp_path / "toy.inter").write_bytes(b"userID\titemID\tx_label\n0\t\xff\xfe\t0\n")
    with pytest.raises(DatasetFormatError, match=r"toy\.inter: not UTF-8 text"):
        read_mmrec(tmp_path)


@pytest.mark.parametrize("long_line", [0, 1])
def test_inter_line_longer_than_the_header(tmp_path, long_line):
    lines = ["0\t0\t0", "0\t1\t1", "0\t2\t2"]
    lines[long_line] += "\t7\t8"  # pandas would drop the fields (or, on the first line, shift
    write_inter(tmp_path, lines)  # every column into a row index)
    with pytest.raises(DatasetFormatError, match=r"toy\.inter: not a readable tab-separated"):
        read_mmrec(tmp_path)
