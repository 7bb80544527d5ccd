"""Training under the MMRec protocol: trainer, full-sort evaluation, auxiliary-estimator fitting,
saving/loading trained models, top-K recommendation, runs over several seeds and paired
significance tests between runs.

``train/`` trains; it does not know the model list (that is :mod:`sea_pyg.models`' registry).
"""

from sea_pyg.train.auxiliary import AuxiliaryTraining, fit_clubs, fit_estimator
from sea_pyg.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    UnfinishedRunWarning,
    load_checkpoint,
    load_model,
    load_weights,
    model_payload,
    save_model,
)
from sea_pyg.train.config import TrainConfig
from sea_pyg.train.metrics import (
    METRICS,
    PerUserRanking,
    evaluate_ranking,
    evaluate_ranking_per_user,
    ranking_metrics,
)
from sea_pyg.train.per_user import PerUserMetrics, load_per_user
from sea_pyg.train.recommend import Recommendations, recommend
from sea_pyg.train.repeat import MeanStd, SeedRuns, seed_summary, train_seeds
from sea_pyg.train.runfolder import RunFolderError, check_output_dir, run_status
from sea_pyg.train.significance import PairedTest, SignificanceError, compare_runs, paired_test
from sea_pyg.train.stopping import EarlyStopping
from sea_pyg.train.trainer import Trainer, seed_everything

__all__ = [
    "METRICS",
    "evaluate_ranking",
    "evaluate_ranking_per_user",
    "PerUserRanking",
    "ranking_metrics",
    "TrainConfig",
    "EarlyStopping",
    "Trainer",
    "seed_everything",
    "AuxiliaryTraining",
    "fit_estimator",
    "fit_clubs",
    "FORMAT_VERSION",
    "model_payload",
    "save_model",
    "load_model",
    "load_checkpoint",
    "load_weights",
    "CheckpointError",
    "UnfinishedRunWarning",
    "RunFolderError",
    "check_output_dir",
    "run_status",
    "recommend",
    "Recommendations",
    "PerUserMetrics",
    "load_per_user",
    "MeanStd",
    "SeedRuns",
    "seed_summary",
    "train_seeds",
    "PairedTest",
    "SignificanceError",
    "paired_test",
    "compare_runs",
]
