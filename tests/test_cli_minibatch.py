"""``sea-pyg train --minibatch --fanout``: clear errors before any data, and a run."""

import json

import pytest
import yaml

from sea_pyg.cli import CommandError, main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "freedom", "--minibatch"],
         "--minibatch: freedom cannot train on sampled mini-batches"),
        (["--model", "vbpr", "--sea", "--minibatch"],
         "--minibatch: vbpr+sea cannot train on sampled mini-batches"),
        (["--model", "lightgcn", "--minibatch", "--compare", "sea"],
         "--minibatch: sea cannot train"),
        (["--model", "lightgcn", "--fanout", "10", "10"],
         "fanout (--fanout) is a setting of mini-batch training: add --minibatch"),
        (["--model", "mf", "--minibatch", "--fanout", "10"],
         "fanout (--fanout): mf has no neighbourhood to sample (its loss reads only the batch's "
         "rows); drop --fanout, got [10]"),
        (["--model", "lightgcn", "--minibatch", "--fanout", "4", "4", "--compare", "vbpr"],
         "fanout (--fanout): vbpr has no neighbourhood to sample"),
    ],
)
def test_errors_before_the_data(no_data, capsys, tmp_path, flags, message):
    with pytest.raises(CommandError) as exc:
        main(["train", "--synthetic", "tiny", "--out", str(tmp_path / "r"), *flags])
    assert exc.value.code == 2
    assert message in str(exc.value)
    if "cannot train" in message:
        assert "models that can: lightgcn, mf, vbpr (see docs/scale.md)" in str(exc.value)


def test_fanout_of_a_model_without_neighbourhood_before_the_data_flags(no_data, tmp_path):
    """The fan-out is refused before the data flags are even checked (a --data folder that
    does not exist), so before any data is loaded."""
    with pytest.raises(CommandError) as exc:
        main(["train", "--model", "vbpr", "--minibatch", "--fanout", "10", "--data",
              str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert "vbpr has no neighbourhood to sample" in str(exc.value)
    assert "drop --fanout" in str(exc.value)
    with pytest.raises(CommandError, match="does not exist"):  # the data check comes next
        main(["train", "--model", "vbpr", "--minibatch", "--data", str(tmp_path / "missing"),
              "--out", str(tmp_path / "r")])


def test_minibatch_run_and_rerun_from_its_config(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "--model", "lightgcn", "--synthetic", "tiny", "--minibatch", "--fanout",
            "4", "-1", "--epochs", "2", "--out", str(out), "--quiet", "--no-progress"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["minibatch"] is True and res["config"]["fanout"] == [4, -1]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["minibatch"] is True and cfg["fanout"] == [4, -1]
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(again),
                 "--quiet", "--no-progress"]) == 0
    res2 = json.loads((again / "results.json").read_text())
    assert res2["test"] == res["test"] and res2["config"]["fanout"] == [4, -1]
    capsys.readouterr()
    with pytest.raises(CommandError, match="one fan-out per propagation layer: 2"):
        main(["train", "--model", "lightgcn", "--synthetic", "tiny", "--minibatch", "--fanout",
              "4", "--out", str(tmp_path / "x"), "--quiet", "--no-progress"])
