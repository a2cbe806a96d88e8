"""Folds by slide: patches of one slide never sit on both sides of a split.

Stratified by slide label with scikit-learn, so each validation fold holds positive and
negative slides and its patch AUC measures generalisation to unseen slides.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from helpkit.errors import HelpkitError

HOLDOUT_FRACTION = 0.25
"""With one fold, this share of the slides (stratified, at least one of each class) is held out."""


def slide_folds(slide_labels: pd.Series, k: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(train_slides, val_slides) per fold from a Series slide_id -> slide label (0/1).

    ``k >= 2``: stratified K-fold over slides, every slide validated exactly once.
    ``k == 1``: one stratified hold-out of ``HOLDOUT_FRACTION`` of the slides.
    The same labels and seed give the same folds. A class with fewer slides than the
    split needs raises a HelpkitError that says how many there are.
    """
    labels = slide_labels[slide_labels.isin([0, 1])].sort_index()
    if k < 1:
        raise HelpkitError(f"folds must be at least 1, got {k}")
    counts = labels.value_counts()
    need = max(k, 2)
    if len(counts) < 2 or counts.min() < need:
        raise HelpkitError(
            f"{k} fold(s) by slide need at least {need} labelled slides of each class; "
            f"have {int(counts.get(1, 0))} positive and {int(counts.get(0, 0))} negative"
        )
    ids = labels.index.to_numpy()
    if k == 1:
        n_val = max(2, round(HOLDOUT_FRACTION * len(ids)))  # one slide of each class at least
        train, val = train_test_split(ids, test_size=n_val, stratify=labels.to_numpy(), random_state=seed)
        return [(sorted(map(str, train)), sorted(map(str, val)))]
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (sorted(map(str, ids[tr])), sorted(map(str, ids[va])))
        for tr, va in splitter.split(ids, labels.to_numpy())
    ]
