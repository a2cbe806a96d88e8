"""Keras callbacks of a fold: checkpoint and resume state, time budget, progress.

``Checkpoint`` saves after every epoch, atomically: ``checkpoint.keras`` (the compiled
model with its optimizer, to resume from), ``model.keras`` when validation loss improved
(the model other stages use), ``state.json`` (epochs done, history, the early-stopping and
learning-rate schedulers' counters) and ``log.csv``. ``ResumeState`` puts the schedulers'
counters back after Keras resets them at the start of ``fit``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import log_loss, roc_auc_score

from helpkit.io import atomic_path, remove_stale_temps, write_json
from helpkit.progress import progress_bar

MONITOR = "val_loss"
"""What early stopping, the learning-rate schedule and the best model follow."""


def patch_metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Exact patch-level loss, accuracy (at 0.5) and ROC AUC (NaN with one class only)."""
    two_classes = len(np.unique(labels)) == 2
    return {
        "loss": float(log_loss(labels, prob, labels=[0, 1])),
        "accuracy": float(np.mean((prob >= 0.5) == labels)),
        "auc": float(roc_auc_score(labels, prob)) if two_classes else math.nan,
    }


class Validation(keras.callbacks.Callback):
    """Validate after every epoch with exact metrics, added to the epoch logs as ``val_*``.

    Replaces Keras' own validation, whose AUC is binned over 200 thresholds (it reads 0.5
    while an untrained model's outputs all sit near 0.5), so the log, early stopping and
    the best model all follow the same exact numbers. Placed before the callbacks that
    read ``val_loss``.
    """

    def __init__(self, dataset: tf.data.Dataset) -> None:
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        probs, labels = [], []
        for images, y in self.dataset:  # labels come with the patches: failed reads drop both
            probs.append(keras.ops.convert_to_numpy(self.model.predict_on_batch(images)).ravel())
            labels.append(y.numpy().ravel())
        metrics = patch_metrics(np.concatenate(labels), np.concatenate(probs))
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in metrics.items()})


def _plain(logs: dict[str, Any]) -> dict[str, float | None]:
    """Logs as JSON-safe floats; an undefined metric (NaN) becomes None."""
    return {k: float(v) if math.isfinite(float(v)) else None for k, v in logs.items()}


class Checkpoint(keras.callbacks.Callback):
    """Save the resumable state of a fold at the end of every epoch.

    At the start of training it removes what a killed save left in the fold folder
    (``helpkit.io.remove_stale_temps``) and, on a resumed fold, says so on stderr:
    ``fold K: resuming from epoch E`` (K the fold folder's index, E the next epoch, 1-based
    like the epoch lines).
    """

    def __init__(self, folder: Path, state: dict[str, Any], schedulers: dict[str, keras.callbacks.Callback]) -> None:
        super().__init__()
        self.folder = folder
        self.state = state
        self.schedulers = schedulers

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        remove_stale_temps(self.folder)
        done = int(self.state.get("epochs_done", 0))
        if done > 0:
            fold = self.folder.name.removeprefix("fold_")
            print(f"fold {fold}: resuming from epoch {done + 1} ({done} done, from {self.folder / 'checkpoint.keras'})",
                  file=sys.stderr, flush=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _plain(logs or {})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.state["history"].append({"epoch": epoch, **logs})
        self.state["epochs_done"] = epoch + 1
        current, best = logs.get(MONITOR), self.state.get("best")
        improved = current is not None and (best is None or current < best)
        if improved or not (self.folder / "model.keras").is_file():
            self.state.update(best=current, best_epoch=epoch)
            with atomic_path(self.folder / "model.keras") as tmp:
                self.model.save(tmp)
        with atomic_path(self.folder / "checkpoint.keras") as tmp:
            self.model.save(tmp)
        self.state["schedulers"] = {
            name: {"wait": cb.wait, "best": None if cb.best is None else float(cb.best)}
            for name, cb in self.schedulers.items()
        }
        with atomic_path(self.folder / "log.csv") as tmp:
            pd.DataFrame(self.state["history"]).to_csv(tmp, index=False)
        write_json(self.folder / "state.json", self.state)


class ResumeState(keras.callbacks.Callback):
    """Restore early-stopping / learning-rate counters saved by ``Checkpoint`` (placed after them)."""

    def __init__(self, state: dict[str, Any], schedulers: dict[str, keras.callbacks.Callback]) -> None:
        super().__init__()
        self.state = state
        self.schedulers = schedulers

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for name, saved in self.state.get("schedulers", {}).items():
            self.schedulers[name].wait = saved["wait"]
            self.schedulers[name].best = saved["best"]


class TimeBudget(keras.callbacks.Callback):
    """Stop training early enough that validation and saving finish before ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value. The first step (tracing and compiling)
    is not counted as a step time. The time kept in reserve is 1.5x what the last
    validation-plus-save took, or before the first one, a guess from the training step
    time and the number of validation batches.
    """

    def __init__(self, deadline: float, val_steps: int, margin_s: float = 10.0) -> None:
        super().__init__()
        self.deadline = deadline
        self.val_steps = val_steps
        self.margin_s = margin_s
        self.step_s = 0.0
        self.tail_s: float | None = None
        self.stopped = False
        self._steps = 0
        self._last = self._train_end = 0.0

    def _reserve(self) -> float:
        guess = self.tail_s if self.tail_s is not None else self.val_steps * self.step_s + 5.0
        return 1.5 * guess + self.margin_s + self.step_s

    def _stop_if_late(self) -> None:
        if time.monotonic() + self._reserve() > self.deadline:
            self.model.stop_training = True
            self.stopped = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        step = now - self._last
        self._last = self._train_end = now
        self._steps += 1
        if self._steps == 1:  # the first step traces and compiles: not a step time
            if now + self.margin_s > self.deadline:
                self.model.stop_training = self.stopped = True
            return
        self.step_s = step if self.step_s == 0 else 0.9 * self.step_s + 0.1 * step
        self._stop_if_late()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.tail_s = time.monotonic() - self._train_end  # validation and saving (callbacks before)
        self._stop_if_late()


class Progress(keras.callbacks.Callback):
    """A progress bar per epoch on stderr (helpkit.progress) and a one-line epoch summary."""

    def __init__(self, description: str, steps: int) -> None:
        super().__init__()
        self.description = description
        self.steps = steps
        self._bar = progress_bar(transient=True)
        self._task = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._bar.start()
        self._task = self._bar.add_task(f"{self.description} epoch {epoch + 1}", total=self.steps)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._bar.advance(self._task)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._bar.remove_task(self._task)
        self._bar.stop()
        shown = " ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()))
        self._bar.console.print(f"{self.description} epoch {epoch + 1}: {shown}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._bar.stop()
