import math

import pytest
import torch

from sea_pyg.nn.losses import CLUB, InfoNCE, NegativeL2, SoloSimLoss, bpr_loss, emb_loss
from sea_pyg.train import fit_clubs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# dtype / device
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_inputs(device, dtype):
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(10, 4, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(10, 4, generator=gen).to(device=device, dtype=dtype)
    club = CLUB(4, 4, 3).to(device=device, dtype=dtype)
    outputs = [
        bpr_loss(a[:, 0], b[:, 0], "log2"),
        emb_loss(a, b),
        club(a, b),
        club(a, b, estimator="all_pairs", generator=None),
        club(a, b, generator=torch.Generator().manual_seed(0)),  # CPU generator is fine
        club.learning_loss(a, b),
        SoloSimLoss()(a, b),
        SoloSimLoss(chunk_size=3)(a, b),
        InfoNCE()(a, b),
        InfoNCE(chunk_size=3)(a, b),
        NegativeL2()(a, b),
    ]
    for out in outputs:
        assert out.dtype == dtype and out.device.type == device and out.dim() == 0
    opt = torch.optim.Adam(club.parameters(), lr=1e-3)
    assert math.isfinite(fit_clubs([(club, [(a, b)])], opt, 2))
