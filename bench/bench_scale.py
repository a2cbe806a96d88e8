"""Probe: one CNN of the stacked recipe at a finer scale, alone and as a fourth model of the stack.

Trains the stacked submission's ``fine`` CNN (its simple CNN again, ``bench_quality``'s budgets
and seed) alone at ``--mpp``, through the platform's train and inference stages on the
same competitions as ``bench/bench_quality.py``. Then it prints, on phase 1 and phase 2:

- the AUC of each slide's maximum probability, overall and of each deposit class against the
  negatives (``bench_quality.class_aucs``), beside the same columns of ``--stacked-run`` (an
  earlier ``bench_quality.py --models simple unet inception --out`` at the default sizes and seed:
  the shipped recipe without its own ``fine`` CNN);
- the shipped LightGBM stack refitted on that run's out-of-fold heatmap features with and
  without the ``fine`` model's (``bench_stacker``'s feature sets), scored on both test sets.

    .venv/bin/python bench/bench_scale.py --stacked-run build/bq/tumour01 --out build/bench-scale [--mpp 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import bench_quality as bq  # noqa: E402
import bench_stacker as bs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacked-run", type=Path,
                        help="An earlier bench_quality --out (default sizes, --models simple unet inception).")
    parser.add_argument("--mpp", type=float, default=1.0, help="Microns per pixel of the fine CNN (default 1).")
    parser.add_argument("--data", type=Path, default=Path("build/bench-quality/data"))
    parser.add_argument("--out", type=Path, default=Path("build/bench-scale"), help="Emptied, then outputs.")
    args = parser.parse_args()
    if args.stacked_run is None:  # `make bench` runs every bench: this one needs a bench_quality run
        print("bench_scale: skipped: pass --stacked-run OUT, an earlier "
              "`bench/bench_quality.py --models simple unet inception --out OUT`")
        return

    import tensorflow as tf

    from helpkit import pipeline
    from helpkit.config import load_submission
    from helpkit.ensemble import LGBMStacker
    from helpkit.ensemble import features_input as tbl
    from helpkit.layouts import platform_folders
    from helpkit.scoring import auc

    tf.config.experimental.enable_op_determinism()
    s = bq.FULL
    key = f"train{s.train}_test{s.test}_size{s.size}_seed{s.seed}"
    data = {phase: args.data / f"{phase}_{key}" for phase in bq.PHASES}
    missing = [str(d) for d in data.values() if not d.is_dir()]
    if missing or not (args.stacked_run / bq.SCORES_FILE).is_file():
        raise SystemExit(f"bench_scale: run bench/bench_quality.py first (missing: {missing or args.stacked_run})")
    train3 = bs.load(args.stacked_run / "models" / "stacked" / "heatmaps")
    if any(column.startswith(f"{bq.FINE}__") for column in train3.columns):  # before training: refused in seconds
        raise SystemExit(f"bench_scale: {args.stacked_run} already stacks a {bq.FINE} CNN: pass a run of "
                         "bench_quality.py --models simple unet inception")
    shutil.rmtree(args.out, ignore_errors=True)
    stacked = bq.fixed_budget(load_submission(s.stacked), s)
    config = bq.stacked_models(stacked, (bq.FINE,), args.mpp)  # the shipped fine CNN alone, at --mpp
    config = config.model_copy(update={"ensemble": stacked.ensemble.model_copy(update={"method": "single",
                                                                                     "params": {}})})
    model_dir = args.out / "model"
    pipeline.train(platform_folders(data["phase1"])[0], model_dir, config)

    earlier = pd.read_csv(args.stacked_run / bq.SCORES_FILE, index_col="slide_id")
    rows, stack_rows = [], []
    train4 = train3.merge(bs.load(model_dir / "heatmaps").drop(columns=["label", "split"]), on="slide_id")
    y = train3["label"].to_numpy(dtype=int)
    for phase, root in data.items():
        test = platform_folders(root)[1]
        work = args.out / f"infer-{phase}"
        scores = pipeline.infer(test, model_dir, work / "fine.csv", config, work_dir=work)
        truth = earlier[earlier["phase"] == phase]
        frame = truth.assign(**{"fine max": scores.reindex(truth.index).to_numpy(float)})
        for column in ("fine max", "simple max", f"{bq.STACK} stack"):
            rows.append({"phase": phase, "candidate": column, **bq.class_aucs(frame, column)})
        heatmaps = bs._work_dir(args.stacked_run / "inference" / phase / "stacked")
        test3 = bs.load(heatmaps, root)
        test4 = test3.merge(bs.load(bs._work_dir(work), root).drop(columns=["label", "split"]), on="slide_id")
        for name, train, tested in (("3 CNNs", train3, test3), ("3 CNNs + fine", train4, test4)):
            columns = bs.columns(train)["calib"]
            model = LGBMStacker().fit(tbl.frame(train, columns), y)
            p = model.predict_proba(tbl.frame(tested, columns))[:, 1]
            stack_rows.append({"phase": phase, "stack": name, "auc": auc(tested["label"].to_numpy(dtype=int), p)})
    table = pd.DataFrame(rows)
    stacks = pd.DataFrame(stack_rows).pivot(index="stack", columns="phase", values="auc")
    table.to_csv(args.out / "scale.csv", index=False)
    stacks.to_csv(args.out / "stacks.csv")
    with pd.option_context("display.width", 200):
        print(f"fine CNN at {args.mpp:g} um/px against {args.stacked_run}'s candidates (AUC; by class: "
              "positives of that class against the negatives):")
        print(table.round(3).to_string(index=False))
        print("\nLightGBM stack (shipped defaults, calibration features) refitted on the out-of-fold features:")
        print(stacks.round(3).to_string())
    print(f"wrote {args.out / 'scale.csv'} and {args.out / 'stacks.csv'}")


if __name__ == "__main__":
    main()
