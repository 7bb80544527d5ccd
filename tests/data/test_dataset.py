"""MMRecDataset: processing, cache reuse and invalidation, missing-file messages, CLI."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from sea_pyg.cli import main
from sea_pyg.data import DatasetFormatError, MMRecDataset, make_synthetic, read_mmrec
from sea_pyg.data.mmrec import EDGE_TYPE


@pytest.fixture
def root(tmp_path):
    """A dataset root with the 'tiny' synthetic MMRec files in root/raw, named 'baby'."""
    make_synthetic("tiny", seed=0).to_mmrec(tmp_path / "raw", name="baby")
    return tmp_path


def caches(root):
    return sorted(p.name for p in (root / "processed").glob("baby_*.pt"))


def same_graph(a, b):
    for key in ("edge_index", "val_edge_index", "test_edge_index"):
        if not torch.equal(a[EDGE_TYPE][key], b[EDGE_TYPE][key]):
            return False
    return all(torch.equal(a["item"][f"x_{m}"], b["item"][f"x_{m}"]) for m in a.modalities)


def test_first_load_processes_second_reuses_cache(root, monkeypatch):
    calls = []
    original = MMRecDataset.process
    monkeypatch.setattr(MMRecDataset, "process", lambda self: calls.append(1) or original(self))
    ds = MMRecDataset(root, "baby", log=False)
    assert calls == [1] and len(caches(root)) == 1 and len(ds) == 1
    data = ds[0]
    assert same_graph(data, read_mmrec(root / "raw", "baby"))
    assert data.name == "baby" and data.modalities == ["image", "text"]
    again = MMRecDataset(root, "baby", log=False)[0]
    assert calls == [1]  # cache reused
    assert same_graph(data, again)
    # the cache is a weights_only-loadable file
    obj = torch.load(root / "processed" / caches(root)[0], weights_only=True)
    assert isinstance(obj, tuple) and len(obj) == 3


def test_changed_raw_file_or_option_is_reprocessed(root):
    first = MMRecDataset(root, "baby", log=False)[0]
    old_cache = caches(root)
    inter = pd.read_csv(root / "raw" / "baby.inter", sep="\t")
    inter = inter[
        ~((inter["x_label"] == 0) & (inter.index == inter.index[inter["x_label"] == 0][0]))
    ]
    inter.to_csv(root / "raw" / "baby.inter", sep="\t", index=False)
    st = os.stat(root / "raw" / "baby.inter")
    os.utime(root / "raw" / "baby.inter", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = MMRecDataset(root, "baby", log=False)[0]
    assert second[EDGE_TYPE].edge_index.size(1) == first[EDGE_TYPE].edge_index.size(1) - 1
    assert caches(root) != old_cache and len(caches(root)) == 1  # stale cache removed

    # same size and mtime but other content: only content_hash notices
    feat = root / "raw" / "text_feat.npy"
    st = os.stat(feat)
    arr = np.load(feat)
    arr[0] = arr[0][::-1].copy()
    np.save(feat, arr)
    os.utime(feat, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed = MMRecDataset(root, "baby", content_hash=True, log=False)[0]
    assert torch.equal(hashed["item"].x_text, torch.from_numpy(arr))

    text_only = MMRecDataset(root, "baby", modalities=["text"], log=False)[0]
    assert text_only.modalities == ["text"] and "x_image" not in text_only["item"]


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DatasetFormatError) as err:
        MMRecDataset(tmp_path, "sports", log=False)
    msg = str(err.value)
    assert "sports.inter" in msg and "image_feat.npy" in msg and "text_feat.npy" in msg
    assert str((tmp_path / "raw").resolve()) in msg
    assert "https://github.com/enoche/MMRec" in msg and "Google Drive" in msg
    assert "NOT downloaded automatically" in msg

    make_synthetic("tiny", seed=0).to_mmrec(tmp_path / "raw", name="sports")
    (tmp_path / "raw" / "image_feat.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"missing file\(s\) image_feat\.npy in"):
        MMRecDataset(tmp_path, "sports", log=False)
    # a custom name takes whatever features are there
    data = MMRecDataset(tmp_path, "sports", modalities=["text"], log=False)[0]
    assert data.modalities == ["text"]


def test_custom_name_and_id_maps(tmp_path):
    synth = make_synthetic("tiny", seed=1)
    synth.to_mmrec(tmp_path / "raw", name="mine")
    n_users, n_items = synth.num_users, synth.num_items
    pd.DataFrame({"user_id": [f"U{i}" for i in range(n_users)], "userID": range(n_users)}).to_csv(
        tmp_path / "raw" / "u_id_mapping.csv", sep="\t", index=False
    )
    data = MMRecDataset(tmp_path, "mine", log=False)[0]
    assert data.modalities == ["image", "text"]
    assert data["user"].raw_id[:2] == ["U0", "U1"] and "raw_id" not in data["item"]
    pd.DataFrame({"asin": ["x"], "itemID": [0]}).to_csv(
        tmp_path / "raw" / "i_id_mapping.csv", sep="\t", index=False
    )
    with pytest.warns(UserWarning, match=r"i_id_mapping\.csv: itemID must list every id"):
        data = MMRecDataset(tmp_path, "mine", log=False)[0]  # new id map file -> reprocessed
    assert "raw_id" not in data["item"] and n_items == data["item"].num_nodes


def test_cli_train_and_info_accept_a_dataset_root(root, tmp_path, capsys):
    assert main(["info", "--data", str(root)]) == 0
    assert "dataset baby: 60 users, 40 items" in capsys.readouterr().out
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--model", "mf", "--epochs", "1", "--out", str(run),
            "--no-progress", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (run / "best.pt").is_file()
    shutil.copy(root / "raw" / "baby.inter", root / "raw" / "other.inter")
    with pytest.raises(SystemExit, match="pass --name"):
        main(["info", "--data", str(root)])
    assert main(["info", "--data", str(root), "--name", "other"]) == 0
