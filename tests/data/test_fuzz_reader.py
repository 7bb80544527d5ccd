"""Fuzz test of the reader: a seeded loop feeds ``read_mmrec`` (and ``MMRecDataset``'s cache)
hundreds of corrupted folders. Each must either load as a valid graph or raise
``DatasetFormatError`` whose message names a corrupted file; no other exception escapes, and a
corrupted id map only ever warns (naming it)."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sea_pyg.data import DatasetFormatError, MMRecDataset, read_mmrec, write_mmrec
from sea_pyg.data.files import DatasetWarning
from sea_pyg.data.mmrec import EDGE_TYPE, REV_EDGE_TYPE

SEED = 20240611
N_READER_CASES = 600
N_CACHE_CASES = 100

INTER, IMAGE, TEXT, U_MAP, I_MAP = (
    "toy.inter", "image_feat.npy", "text_feat.npy", "u_id_mapping.csv", "i_id_mapping.csv",
)  # fmt: skip
FILES = [INTER, IMAGE, TEXT, U_MAP, I_MAP]
TEXT_FILES = {INTER, U_MAP, I_MAP}
NPY_FILES = {IMAGE, TEXT}
ID_MAPS = {U_MAP, I_MAP}

#: Cell values that have broken readers: empty, not numbers, huge, negative, odd spellings.
TOKENS = ["", "nan", "NaN", "-1", "1e20", "1e400", "inf", str(2**40), str(2**64 + 1),
          "99999999999999999999999", "abc", "1.5", "3.0", "0x10", " 7 ", "\x00", "é", "3", "0",
          "2", "1", "True", "'", '"', "#", "\\", "-0", "+4"]  # fmt: skip


def pristine(folder: Path) -> Path:
    """8 users x 10 items, every user with training, validation and test rows, two modalities
    and both id maps."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(8):
        items = rng.permutation(10)[:5]
        rows += [(u, int(i), s) for i, s in zip(items, (0, 0, 0, 1, 2), strict=True)]
    rows += [(u, u + 2, 0) for u in range(8)]  # every item occurs
    df = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).drop_duplicates(
        ["userID", "itemID"]
    )
    df["rating"] = 5
    feats = {"image": rng.random((10, 4), dtype=np.float32), "text": rng.standard_normal((10, 3))}
    raw_ids = {"user": [f"U{u}" for u in range(8)], "item": [f"I{i}" for i in range(10)]}
    write_mmrec(folder, "toy", df, feats, raw_ids=raw_ids)
    return folder


# ---- mutations: each takes (rng, path) and corrupts the file at path ----------------------------


def _bytes_mutation(fn: Callable[[np.random.Generator, bytes], bytes]):
    def mutate(rng, path):
        path.write_bytes(fn(rng, path.read_bytes()))

    return mutate


def _truncate(rng, data):
    return data[: int(rng.integers(0, max(1, len(data))))]


def _flip_bits(rng, data):
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if buf:
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
    return bytes(buf)


def _overwrite(rng, data):
    if not data:
        return bytes(rng.integers(0, 256, 8, dtype=np.uint8))
    start = int(rng.integers(len(data)))
    n = int(rng.integers(1, 33))
    return data[:start] + bytes(rng.integers(0, 256, n, dtype=np.uint8)) + data[start + n :]


def _insert(rng, data):
    pos = int(rng.integers(len(data) + 1))
    return (
        data[:pos]
        + bytes(rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8))
        + data[pos:]
    )


def _delete_span(rng, data):
    if not data:
        return data
    start = int(rng.integers(len(data)))
    return data[:start] + data[start + int(rng.integers(1, 65)) :]


def _duplicate_span(rng, data):
    if not data:
        return data
    start = int(rng.integers(len(data)))
    return data[:start] + data[start : start + int(rng.integers(1, 65))] + data[start:]


def _garbage(rng, data):
    return bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))


BYTE_MUTATIONS = {
    name: _bytes_mutation(fn)
    for name, fn in [
        ("truncate", _truncate),
        ("flip", _flip_bits),
        ("overwrite", _overwrite),
        ("insert", _insert),
        ("delete", _delete_span),
        ("dup-span", _duplicate_span),
        ("garbage", _garbage),
        ("empty", lambda rng, d: b""),
    ]  # fmt: skip
}


def _lines_mutation(fn: Callable[[np.random.Generator, list[list[str]]], list[list[str]]]):
    """A mutation of the tab/comma-separated cells of a text file (split on the separator)."""

    def mutate(rng, path):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        sep = "\t" if "\t" in text.splitlines()[0] else ","
        rows = [line.split(sep) for line in text.splitlines()]
        rows = fn(rng, rows)
        out = "\n".join(sep.join(r) for r in rows) + "\n"
        path.write_bytes(out.encode("utf-8", errors="surrogateescape"))

    return mutate


def _pick(rng, rows, header=False):
    lo = 0 if header else 1
    return int(rng.integers(lo, len(rows))) if len(rows) > lo else 0


def _set_cell(rng, rows):
    r = _pick(rng, rows)
    if rows[r]:
        rows[r][int(rng.integers(len(rows[r])))] = TOKENS[int(rng.integers(len(TOKENS)))]
    return rows


def _drop_column(rng, rows):
    c = int(rng.integers(len(rows[0])))
    return [r[:c] + r[c + 1 :] for r in rows]


def _rename_header(rng, rows):
    rows[0][int(rng.integers(len(rows[0])))] = TOKENS[int(rng.integers(len(TOKENS)))] or "x"
    return rows


def _add_field(rng, rows):
    rows[_pick(rng, rows, header=True)].append(TOKENS[int(rng.integers(len(TOKENS)))])
    return rows


def _drop_field(rng, rows):
    r = _pick(rng, rows, header=True)
    if rows[r]:
        rows[r].pop(int(rng.integers(len(rows[r]))))
    return rows


def _dup_line(rng, rows):
    r = _pick(rng, rows)
    return rows[: r + 1] + [list(rows[r])] + rows[r + 1 :]


def _del_line(rng, rows):
    r = _pick(rng, rows, header=True)
    return rows[:r] + rows[r + 1 :]


def _swap_lines(rng, rows):
    a, b = _pick(rng, rows, header=True), _pick(rng, rows, header=True)
    rows[a], rows[b] = rows[b], rows[a]
    return rows


def _copy_cell_down(rng, rows):  # a value of one row into another (duplicates, gaps, splits)
    a, b = _pick(rng, rows), _pick(rng, rows)
    if rows[a] and rows[b]:
        c = int(rng.integers(min(len(rows[a]), len(rows[b]))))
        rows[b][c] = rows[a][c]
    return rows


def _offset_ids(rng, rows):  # shift a column of ids (a gap at 0, or beyond the features)
    c = int(rng.integers(len(rows[0])))
    shift = int(rng.choice([1, -1, 5, 1000]))
    for r in rows[1:]:
        if c < len(r) and r[c].strip().lstrip("-").isdigit():
            r[c] = str(int(r[c]) + shift)
    return rows


LINE_MUTATIONS = {
    name: _lines_mutation(fn)
    for name, fn in [
        ("cell", _set_cell),
        ("drop-col", _drop_column),
        ("header", _rename_header),
        ("add-field", _add_field),
        ("drop-field", _drop_field),
        ("dup-line", _dup_line),
        ("del-line", _del_line),
        ("swap", _swap_lines),
        ("copy-cell", _copy_cell_down),
        ("offset", _offset_ids),
        ("only-header", lambda rng, rows: rows[:1]),
    ]  # fmt: skip
}


def _other_separator(rng, path):
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\t", str(rng.choice([",", " ", ";", "  "]))), encoding="utf-8")


def _crlf_bom_blank(rng, path):
    text = path.read_text(encoding="utf-8")
    kind = int(rng.integers(3))
    if kind == 0:
        text = text.replace("\n", "\r\n")
    elif kind == 1:
        text = "\ufeff" + text
    else:
        lines = text.splitlines()
        lines.insert(int(rng.integers(1, len(lines) + 1)), "")
        text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")


TEXT_MUTATIONS = {
    **LINE_MUTATIONS,
    "separator": _other_separator,
    "crlf-bom-blank": _crlf_bom_blank,
}


def _npy_array(fn: Callable[[np.random.Generator, np.ndarray], np.ndarray], pickle=False):
    def mutate(rng, path):
        arr = np.load(path)  # the pristine array (this file was written by np.save)
        np.save(path, fn(rng, arr), allow_pickle=pickle)

    return mutate


def _inject(value):
    def fn(rng, arr):
        arr = arr.astype(np.float64)
        arr[int(rng.integers(arr.shape[0])), int(rng.integers(arr.shape[1]))] = value
        return arr

    return fn


def _header_edit(rng, path):
    data = path.read_bytes()
    edits = [(b"'descr': '<f", b"'descr': '|O"), (b"'descr': '<f", b"'descr': '<c"),
             (b"False", b"True "), (b"'shape': (", b"'shape': (-"), (b"'shape'", b"'shapE'"),
             (b"{", b"["), (b"\x01\x00", b"\x02\x00"), (b"\x01\x00", b"\x03\x00"),
             (b"(10,", b"(99,")]  # fmt: skip
    old, new = edits[int(rng.integers(len(edits)))]
    path.write_bytes(data.replace(old, new, 1))


NPY_MUTATIONS = {
    "objects": _npy_array(lambda rng, a: a.astype(object), pickle=True),
    "complex": _npy_array(lambda rng, a: a.astype(np.complex64)),
    "bool": _npy_array(lambda rng, a: a > 0.5),
    "str": _npy_array(lambda rng, a: a.astype(str)),
    "structured": _npy_array(lambda rng, a: np.zeros(a.shape[0], dtype=[("x", "f4"), ("y", "i2")])),
    "float16": _npy_array(lambda rng, a: a.astype(np.float16)),
    "int8": _npy_array(lambda rng, a: (a * 10).astype(np.int8)),
    "uint64-huge": _npy_array(lambda rng, a: np.full(a.shape, 2**64 - 1, dtype=np.uint64)),
    "1-d": _npy_array(lambda rng, a: a.ravel()),
    "3-d": _npy_array(lambda rng, a: a[:, :, None]),
    "rows+1": _npy_array(lambda rng, a: np.vstack([a, a[:1]])),
    "rows-1": _npy_array(lambda rng, a: a[:-1]),
    "no-cols": _npy_array(lambda rng, a: a[:, :0]),
    "no-rows": _npy_array(lambda rng, a: a[:0]),
    "scalar": _npy_array(lambda rng, a: np.float64(3.0)),
    "nan": _npy_array(_inject(np.nan)),
    "inf": _npy_array(_inject(-np.inf)),
    "1e300": _npy_array(_inject(1e300)),
    "fortran": _npy_array(lambda rng, a: np.asfortranarray(a)),
    "big-endian": _npy_array(lambda rng, a: a.astype(a.dtype.newbyteorder(">"))),
    "header": _header_edit,
}


def _directory(rng, path):
    path.unlink()
    path.mkdir()


def _symlink_loop(rng, path):
    path.unlink()
    os.symlink(path, path)


def _dangling(rng, path):
    path.unlink()
    os.symlink(path.parent / "nowhere", path)


def _fifo(rng, path):
    path.unlink()
    os.mkfifo(path)


def _missing(rng, path):
    path.unlink()


FS_MUTATIONS = {"directory": _directory, "loop": _symlink_loop, "dangling": _dangling,
                "fifo": _fifo, "missing": _missing}  # fmt: skip


def mutations_for(file: str) -> dict[str, Callable]:
    out = dict(BYTE_MUTATIONS)
    out.update(TEXT_MUTATIONS if file in TEXT_FILES else NPY_MUTATIONS)
    return out


# ---- the check of one case -----------------------------------------------------------------


def check_graph(data, folder: Path) -> None:
    """What every loaded graph must satisfy."""
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    assert num_users > 0 and num_items > 0
    store = data[EDGE_TYPE]
    for key in ("edge_index", "val_edge_index", "test_edge_index"):
        e = store[key]
        assert e.dtype == torch.long and e.dim() == 2 and e.size(0) == 2 and e.size(1) > 0
        assert int(e[0].min()) >= 0 and int(e[0].max()) < num_users
        assert int(e[1].min()) >= 0 and int(e[1].max()) < num_items
    assert torch.equal(data[REV_EDGE_TYPE].edge_index, store.edge_index.flip(0))
    for m in data.modalities:
        x = data["item"][f"x_{m}"]
        assert x.dtype == torch.float32 and x.dim() == 2 and x.shape[0] == num_items
        assert x.shape[1] > 0 and bool(torch.isfinite(x).all())
    for node, n in (("user", num_users), ("item", num_items)):
        if "raw_id" in data[node]:
            assert len(data[node].raw_id) == n


def run_case(folder: Path, corrupted: set[str], load: Callable) -> str:
    """Load ``folder``; returns "loaded" or "refused" or fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load()
        except DatasetFormatError as exc:
            msg = str(exc)
            assert any(name in msg for name in corrupted), f"no corrupted file named: {msg}"
            assert not (corrupted <= ID_MAPS), f"a broken id map must only warn: {msg}"
            return "refused"
    for w in caught:
        if issubclass(w.category, DatasetWarning):
            assert folder.name in str(w.message) or any(f in str(w.message) for f in FILES)
    check_graph(data, folder)
    return "loaded"


def test_fuzz_reader(tmp_path):
    base = pristine(tmp_path / "base")
    rng = np.random.default_rng(SEED)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(N_READER_CASES):
        folder = tmp_path / f"c{case}"
        shutil.copytree(base, folder)
        corrupted, done = set(), []
        for _ in range(int(rng.integers(1, 3))):  # one or two corruptions
            file = FILES[int(rng.integers(len(FILES)))]
            path = folder / file
            if not path.is_file() or path.is_symlink():
                continue
            table = {**mutations_for(file), **(FS_MUTATIONS if rng.random() < 0.08 else {})}
            name = list(table)[int(rng.integers(len(table)))]
            try:
                table[name](rng, path)
            except Exception:  # noqa: BLE001
                continue  # this mutation does not apply to the (already corrupted) file
            corrupted.add(file)
            done.append(f"{file}:{name}")
        try:
            outcomes[run_case(folder, corrupted, lambda f=folder: read_mmrec(f, name="toy"))] += 1
        except AssertionError as exc:
            raise AssertionError(f"case {case} ({', '.join(done)}): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(
                f"case {case} ({', '.join(done)}): {type(exc).__name__} escaped: {exc}"
            ) from exc
        shutil.rmtree(folder, ignore_errors=True)
    # the corruptions exercise both outcomes (a fuzz test that never loads tests little)
    assert outcomes["refused"] > N_READER_CASES // 3 and outcomes["loaded"] > 20, outcomes


def test_fuzz_processed_cache(tmp_path):
    root = tmp_path / "root"
    pristine(root / "raw")
    MMRecDataset(root, "toy", log=False)
    (cache,) = (root / "processed").glob("toy_*.pt")
    torch.save("None", root / "processed" / "pre_transform.pt")  # as older versions wrote it
    rng = np.random.default_rng(SEED + 1)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(N_CACHE_CASES):
        work = tmp_path / f"r{case}"
        shutil.copytree(root, work)
        file = cache.name if rng.random() < 0.8 else "pre_transform.pt"
        table = {**BYTE_MUTATIONS, **FS_MUTATIONS}
        name = list(table)[int(rng.integers(len(table)))]
        table[name](rng, work / "processed" / file)
        try:
            outcome = run_case(work, {file}, lambda w=work: MMRecDataset(w, "toy", log=False)[0])
            outcomes[outcome] += 1
        except AssertionError as exc:
            raise AssertionError(f"cache case {case} ({file}:{name}): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(
                f"cache case {case} ({file}:{name}): {type(exc).__name__} escaped: {exc}"
            ) from exc
        shutil.rmtree(work, ignore_errors=True)
    assert outcomes["refused"] > N_CACHE_CASES // 3, outcomes


@pytest.mark.parametrize("file", FILES)
def test_pristine_folder_loads_and_every_file_matters(tmp_path, file):
    """The fuzz base is valid, and removing any required file is refused naming it."""
    folder = pristine(tmp_path / "f")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_graph(read_mmrec(folder), folder)
    (folder / file).unlink()
    if file in ID_MAPS:
        data = read_mmrec(folder)  # optional
        assert "raw_id" not in data["user" if file == U_MAP else "item"]
    else:
        with pytest.raises(DatasetFormatError, match=file.replace(".", r"\.")):
            read_mmrec(folder, modalities=["image", "text"], name="toy")
