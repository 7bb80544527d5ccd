"""Shared fixtures: small synthetic MMRec folders read back through the real reader."""

import pytest
import torch

from sea_pyg.data import SyntheticPreset, make_synthetic, read_mmrec

#: A little larger than the "tiny" preset so that learning is measurable above noise
#: (400 users each with a held-out item), still well under a second per epoch.
UNIT = SyntheticPreset(
    name="unit",
    num_users=400,
    num_items=150,
    num_interactions=6000,
    feature_dims={"image": 32, "text": 16},
)


@pytest.fixture
def one_thread():
    """Runs a test on one intra-op thread, restored afterwards (modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``). Their tensors are tiny: OpenMP
    threading only adds overhead, and on a shared 2-core machine the spin-waiting of a busy
    second core made single tests 20-50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    make_synthetic("tiny", seed=0).to_mmrec(folder, name="tiny")
    return read_mmrec(folder)


@pytest.fixture(scope="session")
def unit_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unit")
    make_synthetic(UNIT, seed=0).to_mmrec(folder, name="unit")
    return read_mmrec(folder)


def popularity_scores(data):
    """Scores that rank items by training popularity (the same for every user)."""
    train = data["user", "rates", "item"].edge_index
    pop = torch.bincount(train[1], minlength=data["item"].num_nodes).float()
    return lambda users: pop.expand(users.numel(), -1).clone()


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if a CLI command gets as far as loading data (errors that must come
    first)."""
    from sea_pyg.cli import commands

    def load_data(args):
        raise AssertionError("the data was loaded before the error")

    monkeypatch.setattr(commands, "load_data", load_data)


@pytest.fixture
def knn_searches(monkeypatch):
    """The backend every item k-NN search resolved to, in order: every search of the item
    graphs (and ``recommend``'s own) asks ``mips.resolve_backend``, whatever it resolves to."""
    from sea_pyg.nn import mips

    seen = []
    resolve = mips.resolve_backend

    def spy(backend, num_items, params=None):
        out = resolve(backend, num_items, params)
        seen.append(out[0])
        return out

    monkeypatch.setattr(mips, "resolve_backend", spy)
    return seen
