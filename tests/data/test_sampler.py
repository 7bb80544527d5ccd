import pytest
import torch

from sea_pyg.data import BPRSampler


def _edges():
    gen = torch.Generator().manual_seed(0)
    users = torch.repeat_interleave(torch.arange(30), 4)
    items = torch.stack([torch.randperm(12, generator=gen)[:4] for _ in range(30)]).view(-1)
    return torch.stack([users, items])


def test_epoch_covers_every_row_once_in_batches():
    ei = _edges()
    s = BPRSampler(ei, 30, 15, batch_size=16, generator=torch.Generator().manual_seed(1))
    batches = list(s)
    assert len(batches) == len(s) == 8  # ceil(120 / 16)
    assert [b.size(1) for b in batches] == [16] * 7 + [8]
    rows = torch.cat(batches, 1)
    assert rows.shape == (3, 120)
    seen = sorted(zip(rows[0].tolist(), rows[1].tolist(), strict=True))
    assert seen == sorted(zip(ei[0].tolist(), ei[1].tolist(), strict=True))


def test_negatives_follow_the_protocol():
    ei = _edges()
    train = set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    candidates = set(ei[1].tolist())  # items 12..14 never occur in training
    s = BPRSampler(ei, 30, 15, batch_size=50, generator=torch.Generator().manual_seed(2))
    negs = []
    for _ in range(20):
        for b in s:
            for u, n in zip(b[0].tolist(), b[2].tolist(), strict=True):
                assert (u, n) not in train
                assert n in candidates
                negs.append(n)
    # uniform over the allowed candidates: each of the 12 items drawn often
    counts = torch.bincount(torch.tensor(negs), minlength=15)
    assert counts[12:].sum() == 0
    assert counts[:12].min() > 0.5 * counts[:12].float().mean()


def test_deterministic_for_a_seed_and_fresh_each_epoch():
    ei = _edges()
    a = BPRSampler(ei, 30, 12, batch_size=32, generator=torch.Generator().manual_seed(5))
    b = BPRSampler(ei, 30, 12, batch_size=32, generator=torch.Generator().manual_seed(5))
    ea1, ea2 = torch.cat(list(a), 1), torch.cat(list(a), 1)
    assert torch.equal(ea1, torch.cat(list(b), 1))
    assert not torch.equal(ea1, ea2)  # new order and negatives next epoch


def test_without_negatives():
    s = BPRSampler(_edges(), 30, 12, batch_size=64, negatives=False)
    assert next(iter(s)).shape == (2, 64)


def test_errors():
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        BPRSampler(torch.zeros(3, 4, dtype=torch.long), 1, 1)
    with pytest.raises(ValueError, match="empty"):
        BPRSampler(torch.zeros(2, 0, dtype=torch.long), 1, 1)
    with pytest.raises(ValueError, match="num_items"):
        BPRSampler(torch.tensor([[0], [5]]), 1, 3)
    # user 0 trained on every candidate item: no negative exists
    with pytest.raises(ValueError, match="user 0 has interacted with every candidate"):
        BPRSampler(torch.tensor([[0, 0, 1], [0, 1, 0]]), 2, 2)
