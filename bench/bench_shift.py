"""Benchmark: a trained model dir against stain/scanner shift, phase-2 style.

For each ``--shift`` K, a synthetic test set (``helpkit synth --train 2 --test N --size PX
--seed S --shift K``, written once under ``--data`` and reused while ``helpkit.synth.is_current``) goes
through the inference stage (``helpkit.pipeline.infer``, what ``helpkit platform infer``
runs) into a fresh work dir under ``--out``, which is emptied first, so no heatmap of an
earlier run is ever reused. Prints, per test set, the AUC with its 95% DeLong CI of the
submission's output.csv and of each model's max heatmap probability (``<model>__max``), and
the number of fallback rows, and the submission's calibration: the negatives' mean score and the
accuracy of a fixed cut at 0.5 (a stain shift can keep the ranking and still move every score);
writes the table as ``shift.csv`` in ``--out``.

    make demo
    .venv/bin/python bench/bench_shift.py --model-dir demo-run/validation/model --config demo-stacked
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from helpkit import pipeline
from helpkit.config import load_submission
from helpkit.scoring import auc_ci, read_labels, read_predictions
from helpkit.synth import is_current, make_competition


def _cell(y, scores) -> str:
    result = auc_ci(y, scores)
    return f"{result.auc:.3f} [{result.ci_low:.2f}, {result.ci_high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("demo-run/validation/model"))
    parser.add_argument("--config", default="demo-stacked", help="The submission the model dir was trained by.")
    parser.add_argument("--shift", type=float, nargs="+", default=[0, 0.5, 1],
                        help="Test-set shifts: 0 none, 1 the stain space's bounds (more is clipped there).")
    parser.add_argument("--test", type=int, default=20, help="Test slides per set, about half positive.")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--data", type=Path, default=Path("build/bench-shift/data"), help="Test sets, made once.")
    parser.add_argument("--out", type=Path, default=Path("build/bench-shift/out"), help="Emptied, then outputs.")
    args = parser.parse_args()

    if not (args.model_dir / pipeline.PIPELINE_FILE).is_file():
        # `make bench` runs every bench: without a trained model dir there is nothing to measure.
        print(f"bench_shift: skipped: no trained model dir at {args.model_dir} (run `make demo`, or pass --model-dir)")
        return
    config = load_submission(args.config)
    shutil.rmtree(args.out, ignore_errors=True)
    rows = []
    for shift in args.shift:
        data = args.data / f"shift{shift:g}_test{args.test}_size{args.size}_seed{args.seed}"
        params = dict(n_train=2, n_test=args.test, size=args.size, seed=args.seed, shift=shift)
        if not is_current(data, **params):  # slides of another generator or preset are redrawn
            make_competition(data, **params)
        work, output = args.out / f"shift{shift:g}", args.out / f"shift{shift:g}" / "output.csv"
        t0 = time.monotonic()
        pipeline.infer(data / "test", args.model_dir, output, config, work_dir=work / "work")
        features, scratch = pipeline.inference_features(data / "test", args.model_dir, config, work / "work")
        labels = read_labels(data / "labels.csv")
        y = labels.to_numpy(int)
        scores = read_predictions(output).scores.reindex(labels.index).to_numpy(float)
        row = {"shift": shift, config.name: _cell(y, scores)}
        for spec in config.models:
            row[f"{spec.name} max"] = _cell(y, features[f"{spec.name}__max"].reindex(labels.index).fillna(0.5))
        # AUC ranks; a threshold also needs the scores to stay where they were.
        row["negatives' mean"] = round(float(scores[y == 0].mean()), 3)
        row["accuracy at 0.5"] = round(float(((scores >= 0.5) == (y == 1)).mean()), 2)
        row["fallbacks"] = len(json.loads((scratch / "inference.json").read_text())["failures"])
        row["infer_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "shift.csv", index=False)
    print(f"model dir {args.model_dir} ({config.name}); {args.test} test slides per set, {args.size} px, "
          f"seed {args.seed}; AUC [95% DeLong CI]")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
