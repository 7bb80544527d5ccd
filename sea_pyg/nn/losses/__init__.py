r"""Losses for multimodal recommendation and the SEA mutual-information terms.

* :func:`bpr_loss` / :class:`BPRLoss`: Bayesian personalised ranking, in the three numerically
  different forms used by MMRec, FREEDOM and the official SEA code.
* :func:`emb_loss` / :class:`EmbLoss`: MMRec's (un-squared) embedding-norm regulariser.
* :class:`CLUB`: the Contrastive Log-ratio Upper Bound of a mutual information, with its own
  variational network (SEA's *distancing* loss), and :func:`club_gradient_step`, the batched,
  hand-written gradient that fits several estimators at once.
* :func:`solosim_loss` / :class:`SoloSimLoss`: one-directional cross-modal InfoNCE over all items
  (SEA's *alignment* loss), with an exact row-chunked path that never holds the full
  :math:`N \times N` similarity matrix, not even in the backward pass.
* :func:`info_nce_loss` / :class:`InfoNCE`: the symmetric NT-Xent loss with in-modality negatives
  (SEA variants with InfoNCE alignment).
* :func:`negative_l2_loss` / :class:`NegativeL2`: the negative squared distance (SEA variants with
  NegativeL2 distancing).
* :func:`candidate_info_nce_loss` / :class:`CandidateInfoNCE`: InfoNCE of a batch of anchors against
  a whole candidate table (LGMRec's hypergraph contrastive loss), dense or row-chunked.

Every loss takes the dtype and device of its inputs and returns a scalar tensor; called under
autocast (mixed precision) the loss functions and :meth:`CLUB.forward` compute in float32
(:func:`~sea_pyg.nn.precision.full_precision`).

One concept per module: :mod:`~sea_pyg.nn.losses.ranking` (BPR, embedding regularisation),
:mod:`~sea_pyg.nn.losses.club` (CLUB and its fitting gradient),
:mod:`~sea_pyg.nn.losses.contrastive` (the chunked row cross-entropy, SoloSim, InfoNCE),
:mod:`~sea_pyg.nn.losses.distance`
(NegativeL2) and :mod:`~sea_pyg.nn.losses._checks` (the shared argument validators). The
public names are re-exported here.
"""

from sea_pyg.nn.losses.candidates import CandidateInfoNCE, candidate_info_nce_loss
from sea_pyg.nn.losses.club import CLUB, CLUB_ESTIMATORS, club_gradient_step
from sea_pyg.nn.losses.contrastive import InfoNCE, SoloSimLoss, info_nce_loss, solosim_loss
from sea_pyg.nn.losses.distance import NegativeL2, negative_l2_loss
from sea_pyg.nn.losses.ranking import BPR_VARIANTS, BPRLoss, EmbLoss, bpr_loss, emb_loss

__all__ = [
    "bpr_loss",
    "BPRLoss",
    "emb_loss",
    "EmbLoss",
    "CLUB",
    "CLUB_ESTIMATORS",
    "club_gradient_step",
    "BPR_VARIANTS",
    "solosim_loss",
    "SoloSimLoss",
    "info_nce_loss",
    "InfoNCE",
    "negative_l2_loss",
    "NegativeL2",
    "candidate_info_nce_loss",
    "CandidateInfoNCE",
]
