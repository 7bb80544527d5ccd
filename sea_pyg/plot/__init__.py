"""Figures from training runs and studies: curves, ablation bars, sensitivity lines, embedding
scatters, optimisation histories.

Every function reads what :class:`~sea_pyg.train.Trainer` writes (``results.json``, ``best.pt``)
and writes one PNG atomically (:func:`sea_pyg.io.atomic_write`: a temporary file in the same
folder, then ``os.replace``). matplotlib is imported only when a figure is drawn
(``pip install "sea-pyg[plot]"``); no global pyplot state is used, so the functions are safe to
call from other programs.

* :func:`plot_curves`: loss terms and validation Recall/NDCG per epoch of one or more runs,
  best epoch marked.
* :func:`plot_ablation`: test metrics (mean ± std over seeds) per model, as bars, from
  ``benchmarks/compare_models.py`` work folders (the paper's Figure 3).
* :func:`plot_sensitivity`: a metric against one hyper-parameter's value (the paper's Figure 4).
* :func:`plot_embeddings`: a trained SEA model's generic / unique item parts per modality in 2-D
  (t-SNE if scikit-learn is installed, else PCA; the paper's Figures 5 and 6).

From a ``sea-pyg tune`` study (:mod:`sea_pyg.plot.study`; reading a study needs Optuna):

* :func:`plot_trials`: the optimisation history.
* :func:`plot_study_sensitivity`: the paper's Figure 4 from a study, each hyper-parameter with
  the others at the chosen trial's values.
"""

from sea_pyg.plot.figures import (
    Run,
    _figure,
    _save,
    embedding_points,
    find_runs,
    load_run,
    plot_ablation,
    plot_curves,
    plot_embeddings,
    plot_sensitivity,
)
from sea_pyg.plot.study import is_study, plot_study_sensitivity, plot_trials

__all__ = [
    "Run",
    "load_run",
    "find_runs",
    "plot_curves",
    "plot_ablation",
    "plot_sensitivity",
    "embedding_points",
    "plot_embeddings",
    "plot_trials",
    "plot_study_sensitivity",
    "is_study",
]
_PRIVATE = (_figure, _save)  # used by the tests
