"""A dataset folder never runs code: every processed file loads with
``torch.load(weights_only=True)`` and anything else is refused with a message; planted pickle
payloads in every file that reading a folder opens must not run."""

import builtins
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.io import fs

from sea_pyg.cli import main
from sea_pyg.data import DatasetFormatError, MMRecDataset, make_synthetic, read_mmrec
from sea_pyg.data.dataset import PYG_PROCESSED_FILES
from sea_pyg.data.files import DatasetWarning


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def root(tmp_path):
    make_synthetic("tiny", seed=0).to_mmrec(tmp_path / "ds" / "raw", name="baby")
    return tmp_path / "ds"


def cache_file(root):
    (path,) = (root / "processed").glob("baby_*.pt")
    return path


def plant(path, marker, how):
    """Write a payload at ``path``: torch's zip format, a bare pickle, or a payload hidden
    inside the (dict, None, HeteroData) triple of a real cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch":
        torch.save(Payload(marker), path)
    elif how == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save(({"x": Payload(marker)}, None, HeteroData), path)


@pytest.mark.parametrize("how", ["torch", "pickle", "triple"])
@pytest.mark.parametrize("target", ["cache", *PYG_PROCESSED_FILES])
def test_planted_payload_never_runs(root, tmp_path, how, target):
    MMRecDataset(root, "baby", log=False)  # a valid cache exists
    path = cache_file(root) if target == "cache" else root / "processed" / target
    marker = tmp_path / "PWNED"
    plant(path, marker, how)
    with pytest.raises(DatasetFormatError) as err:
        MMRecDataset(root, "baby", log=False)
    msg = str(err.value)
    assert not marker.exists()
    assert msg.startswith(f"{path}: refused: ") and "weights_only=True" in msg
    assert "which was NOT run" in msg and "weights_only=False" not in msg
    fix = f"Delete the folder {root / 'processed'}" if target == "cache" else f"Delete {path}"
    assert fix in msg
    # the command line says the same, and runs nothing either
    with pytest.raises(SystemExit, match="refused"):
        main(["info", "--data", str(root)])
    assert not marker.exists()
    # following the advice fixes it
    if target == "cache":
        for p in (root / "processed").iterdir():
            p.unlink()
    else:
        path.unlink()
    assert MMRecDataset(root, "baby", log=False)[0]["item"].num_nodes == 40
    assert not marker.exists()


def test_force_reload_rebuilds_a_planted_cache_without_loading_it(root, tmp_path):
    MMRecDataset(root, "baby", log=False)
    marker = tmp_path / "PWNED"
    plant(cache_file(root), marker, "torch")
    data = MMRecDataset(root, "baby", force_reload=True, log=False)[0]
    assert not marker.exists() and data["user"].num_nodes == 60
    assert MMRecDataset(root, "baby", log=False)[0]["user"].num_nodes == 60


def test_planted_object_array_in_raw_features_never_runs(root, tmp_path):
    marker = tmp_path / "PWNED"
    feats = np.empty((40, 1), dtype=object)
    feats[:] = Payload(marker)
    np.save(root / "raw" / "text_feat.npy", feats, allow_pickle=True)
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: cannot be read without pickle"):
        MMRecDataset(root, "baby", log=False)
    with pytest.raises(DatasetFormatError, match="cannot be read without pickle"):
        read_mmrec(root / "raw")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        (({}, None, Data), "expected (data dict, None, HeteroData)"),
        ("a string", "expected the triple"),
        (({"_global_store": {}}, None, HeteroData), "lacks part of the graph layout"),
    ],
)
def test_safe_but_foreign_cache_is_refused(root, content, problem):
    MMRecDataset(root, "baby", log=False)
    torch.save(content, cache_file(root))
    with pytest.raises(DatasetFormatError) as err:
        MMRecDataset(root, "baby", log=False)
    assert "not a cache written by MMRecDataset" in str(err.value)
    assert problem in str(err.value) and "Delete the folder" in str(err.value)


def test_tampered_graph_in_cache_is_refused(root):
    MMRecDataset(root, "baby", log=False)
    data_dict, slices, cls = torch.load(cache_file(root), weights_only=True)
    data = HeteroData.from_dict(data_dict)
    data["user", "rates", "item"].test_edge_index[1, 0] = 40  # item 40 of 0..39
    torch.save((data.to_dict(), slices, cls), cache_file(root))
    with pytest.raises(DatasetFormatError, match="test_edge_index holds item ids outside 0 .. 39"):
        MMRecDataset(root, "baby", log=False)
    data["user", "rates", "item"].test_edge_index[1, 0] = 0
    data["item"].x_text[3, 0] = float("nan")
    torch.save((data.to_dict(), slices, cls), cache_file(root))
    with pytest.raises(DatasetFormatError, match="feature x_text is not a finite float32"):
        MMRecDataset(root, "baby", log=False)


@pytest.mark.parametrize("bad", ["truncated", "empty", "directory"])
def test_broken_cache_file_names_the_file(root, bad):
    MMRecDataset(root, "baby", log=False)
    path = cache_file(root)
    if bad == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif bad == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(DatasetFormatError) as err:
        MMRecDataset(root, "baby", log=False)
    assert str(path) in str(err.value) and "Delete the folder" in str(err.value)


def test_pyg_files_holding_a_string_are_accepted_and_no_longer_written(root):
    MMRecDataset(root, "baby", log=False)
    assert sorted(p.name for p in (root / "processed").iterdir()) == [cache_file(root).name]
    torch.save("None", root / "processed" / "pre_transform.pt")  # as PyG / older versions wrote
    torch.save("None", root / "processed" / "pre_filter.pt")
    assert MMRecDataset(root, "baby", log=False)[0]["user"].num_nodes == 60
    torch.save(torch.zeros(2), root / "processed" / "pre_filter.pt")
    with pytest.raises(DatasetFormatError, match=r"pre_filter\.pt: holds a Tensor, where PyG"):
        MMRecDataset(root, "baby", log=False)


def test_every_load_is_weights_only(root, monkeypatch):
    """No unsafe loader is reachable while reading a folder: torch.load always with
    weights_only=True, PyG's fs.torch_load (which falls back to weights_only=False), pickle and
    np.load with allow_pickle never called."""
    calls = []
    real_torch_load = torch.load

    def torch_load(*args, **kwargs):
        calls.append(("torch.load", kwargs.get("weights_only")))
        return real_torch_load(*args, **kwargs)

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"{name} called while reading a dataset folder")

        return fail

    def np_load(*args, **kwargs):
        raise AssertionError("np.load called (read_npy parses .npy itself)")

    monkeypatch.setattr(torch, "load", torch_load)
    monkeypatch.setattr(fs, "torch_load", forbidden("torch_geometric.io.fs.torch_load"))
    monkeypatch.setattr(pickle, "load", forbidden("pickle.load"))
    monkeypatch.setattr(pickle, "loads", forbidden("pickle.loads"))
    monkeypatch.setattr(np, "load", np_load)
    MMRecDataset(root, "baby", log=False)  # process + load
    MMRecDataset(root, "baby", log=False)  # cached load
    torch.save("None", root / "processed" / "pre_transform.pt")
    assert main(["info", "--data", str(root)]) == 0
    read_mmrec(root / "raw")
    assert calls and all(weights_only is True for _, weights_only in calls), calls


def test_format_warnings_are_repeated_from_the_cache(root):
    inter = root / "raw" / "baby.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join([*lines, lines[1]]) + "\n")  # one repeated row
    with pytest.warns(DatasetWarning, match="1 repeated row") as first:
        MMRecDataset(root, "baby", log=False)
    assert len(first) == 1  # processing warns once, not again from the cache
    with pytest.warns(DatasetWarning, match="1 repeated row"):
        data = MMRecDataset(root, "baby", log=False)[0]  # cached: still warned
    assert len(data.format_warnings) == 1


def test_raw_symlink_loop_is_described_not_missing(root):
    os.remove(root / "raw" / "text_feat.npy")
    os.symlink(root / "raw" / "text_feat.npy", root / "raw" / "text_feat.npy")
    with pytest.raises(DatasetFormatError, match=r"text_feat\.npy: is a symbolic link loop"):
        MMRecDataset(root, "baby", log=False)


def test_no_warning_on_a_clean_cached_load(root):
    MMRecDataset(root, "baby", log=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MMRecDataset(root, "baby", log=False)[0]["user"].num_nodes == 60
    assert not any(Path(root / "processed").glob("*.tmp*"))
