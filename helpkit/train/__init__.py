"""Training patch CNNs by slide-level folds; the run folder other stages read."""

from helpkit.train.run_folder import Fold, Run, fold_dir, load_run, write_run

__all__ = ["Fold", "Run", "fold_dir", "load_run", "write_run"]
