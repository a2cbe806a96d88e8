"""Benchmark: heatmap throughput against the model's own limit and the per-patch approach.

In one run, on a synthetic slide of at least ``--min-patches`` tissue patches (64-pixel
patches at 0.5 um/px, level 1 of the synthetic slides, the ``simple`` model):

- limit: the fastest forward pass of the model on the same number of patches already in
  memory: ``helpkit.models.compute.forward`` (one compiled ``tf.function``, uint8 in), with
  and without XLA, at the batch size of ``--limit-batches`` that measures fastest; the best
  of those is the limit, and its settings are printed;
- ``model.predict`` on the same patches (the former limit), and the same counting the
  model's load from the run folder and its first-call trace, the fixed costs
  ``helpkit heatmap`` pays too;
- end to end: ``make_heatmaps`` (what ``helpkit heatmap`` runs: load the run's model, tissue
  mask, threaded reads, batched predict, npz write), slide to file: with the defaults
  (``--batch``), and tuned: ``--batch 0`` (batch size chosen by measurement) plus XLA when
  the limit found XLA faster;
- the engine alone with a warm model: the steady state on bigger slides;
- per patch: the reference team's loop, read one patch then one ``model.predict`` call,
  timed on a few hundred patches and extrapolated;
- test-time augmentation: the engine with a warm model under each TTA (``none``, ``flips``,
  ``d4``: 1, 4 and 8 model passes per batch), side by side on the same slide, and each one's
  patches/s over none's (about 1/4 and 1/8 where the model dominates; reads are paid once).

Then peak resident memory of the real ``helpkit heatmap`` command on two slide sizes (a
coarser resolution for both, stated in the output), to show memory does not grow with the slide.
Timings on a shared machine are noisy: each throughput is the best of ``--repeats`` runs,
the limit and the end-to-end runs interleaved so both see the same load.

    .venv/bin/python bench/bench_heatmap.py [--work DIR] [--sizes 50000 100000] [--skip-memory]
    .venv/bin/python bench/bench_heatmap.py --min-patches 8000 --skip-memory   # a few minutes
    .venv/bin/python bench/bench_heatmap.py --min-patches 2000 --skip-throughput --skip-memory  # TTA only
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from helpkit.heatmap.engine import run_heatmap  # noqa: E402
from helpkit.models.compute import best_batch_size, forward  # noqa: E402
from helpkit.heatmap.make import Options, SlideRecord, keras_predictor, make_heatmaps, tissue_grid  # noqa: E402
from helpkit.heatmap.tta import tta_predict, tta_transforms  # noqa: E402
from helpkit.heatmap.tta_spec import TTAS  # noqa: E402
from helpkit.slide import SlideReader, grid_for, tissue_mask  # noqa: E402
from helpkit.slide.geometry import PatchGeometry  # noqa: E402
from helpkit.synth import make_slide  # noqa: E402
from helpkit.train import load_run, write_run  # noqa: E402

PATCH = 64
GEOMETRY = PatchGeometry(mpp=0.5, patch_size=PATCH)


def make_run(run_dir: Path, model, geometry: PatchGeometry) -> Path:
    """A one-fold run folder of ``model`` that trained on no slide: every slide counts as test."""
    write_run(run_dir, name=run_dir.name, architecture="simple", geometry=geometry, width=1.0,
              splits=[([], [])], config={})
    (run_dir / "fold_0").mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "fold_0" / "model.keras")
    return run_dir


def tissue_cells(slide: Path, geometry: PatchGeometry) -> int:
    with SlideReader(slide) as reader:
        return int(tissue_grid(grid_for(reader, geometry), tissue_mask(reader)).sum())


def bench_slide(work: Path, min_patches: int, size: int) -> tuple[Path, int]:
    """A synthetic slide with at least ``min_patches`` tissue cells at 0.5 um/px (grown until it has)."""
    while True:
        slide = work / f"bench_{size}.tiff"
        if not slide.exists():
            make_slide(slide, size, seed=7, positive=True)
        n = tissue_cells(slide, GEOMETRY)
        if n >= min_patches:
            return slide, n
        size = int(size * math.sqrt(min_patches / max(n, 1)) * 1.1) // 256 * 256


def per_patch(reader: SlideReader, model, n: int) -> float:
    """Patches/s of the reference loop: read one patch, call ``model.predict`` on it, repeat."""
    grid = grid_for(reader, GEOMETRY)
    cells = np.argwhere(tissue_grid(grid, tissue_mask(reader)))[:n]
    model.predict(np.zeros((1, PATCH, PATCH, 3), np.uint8), verbose=0)
    start = time.perf_counter()
    for row, col in cells:
        patch = reader.read_region_mpp(grid.cell_xy(row, col), GEOMETRY.mpp, (PATCH, PATCH))
        model.predict(patch[None], verbose=0)
    return len(cells) / (time.perf_counter() - start)


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh wrapper process; return (its peak RSS in MiB, wall seconds)."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    kib, wall, rc = out.stdout.split()[-3:]
    if rc != "0":
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    return int(kib) / 1024, float(wall)


def compiled_limit(model, patches: np.ndarray, batches: list[int], budget_s: float, rounds: int = 2):
    """The fastest compiled forward pass: (xla, batch size, function, {(xla, batch): patches/s}),
    each setting's best of ``rounds`` interleaved sweeps (a shared machine is noisy)."""
    found: dict[tuple[bool, int], float] = {}
    functions = {xla: forward(model, xla=xla) for xla in (False, True)}
    for _ in range(rounds):
        for xla, function in functions.items():
            _, rates = best_batch_size(function, PATCH, batches, budget_s=budget_s / rounds)
            for b, r in rates.items():
                found[(xla, b)] = max(found.get((xla, b), 0.0), r)
    xla, batch = max(found, key=lambda k: found[k])
    return xla, batch, functions[xla], found


def run_forward(function, patches: np.ndarray, batch: int) -> None:
    """``function`` over ``patches`` in full batches of ``batch`` (the last zero-padded: no retrace)."""
    for i in range(0, len(patches), batch):
        chunk = patches[i : i + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        function(chunk)


def throughput(args: argparse.Namespace, work: Path, model) -> None:
    """Print the limit, end-to-end, steady-state and per-patch patches/s and their ratios."""
    slide, n = bench_slide(work, args.min_patches, args.size)
    print(f"slide: {slide.name}, {n} tissue patches at {GEOMETRY.mpp} um/px, {PATCH}px; cpus: {os.cpu_count()}")
    run_dir = make_run(work / "simple_m0.5", model, GEOMETRY)
    record = SlideRecord(slide.stem, slide, "test", float("nan"))
    patches = np.random.default_rng(0).integers(0, 256, (n, PATCH, PATCH, 3), dtype=np.uint8)
    model.predict(patches[: args.batch], batch_size=args.batch, verbose=0)  # trace once, as a warm model
    xla, best_batch, limit_fn, sweep = compiled_limit(model, patches, args.limit_batches, args.sweep_s)
    print("compiled forward, patches/s by batch size (best of 2 sweeps): "
          + "; ".join(f"{'XLA' if x else 'no XLA'} {b}: {r:.0f}" for (x, b), r in sorted(sweep.items())))
    print(f"limit settings: batch {best_batch}, {'XLA' if xla else 'no XLA'}")
    tuned = Options(batch_size=0, xla=xla, force=True)

    run = load_run(run_dir)
    times: dict[str, list[float]] = {"limit": [], "predict": [], "cold": [], "e2e": [], "tuned": [], "engine": []}
    for _ in range(args.repeats):  # interleaved, so every measure sees the same machine load
        start = time.perf_counter()
        run_forward(limit_fn, patches, best_batch)
        times["limit"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(patches, batch_size=args.batch, verbose=0)
        times["predict"].append(time.perf_counter() - start)
        start = time.perf_counter()
        run.load_model(0).predict(patches, batch_size=args.batch, verbose=0)
        times["cold"].append(time.perf_counter() - start)
        start = time.perf_counter()
        counts = make_heatmaps([run_dir], [record], work / "heatmaps", Options(batch_size=args.batch, force=True),
                               keras_predictor())
        times["e2e"].append(time.perf_counter() - start)
        assert counts["written"] == 1, counts
        start = time.perf_counter()
        counts = make_heatmaps([run_dir], [record], work / "heatmaps_tuned", tuned)
        times["tuned"].append(time.perf_counter() - start)
        assert counts["written"] == 1, counts
        with SlideReader(slide) as reader:
            grid = grid_for(reader, GEOMETRY)
            tissue = tissue_grid(grid, tissue_mask(reader))
            start = time.perf_counter()
            run_heatmap(reader, model.predict_on_batch, grid, tissue, batch_size=args.batch)
            times["engine"].append(time.perf_counter() - start)
    del patches
    with SlideReader(slide) as reader:
        slow = per_patch(reader, model, args.per_patch)
    rate = {k: n / min(v) for k, v in times.items()}  # best of the repeats: least disturbed by others
    runs = {k: [round(n / t) for t in v] for k, v in times.items()}
    print(f"limit: compiled forward, in memory, warm      {rate['limit']:8.0f} patches/s  {runs['limit']}")
    print(f"model.predict, in memory, warm (former limit) {rate['predict']:8.0f} patches/s  {runs['predict']}")
    print(f"model.predict incl. model load and trace      {rate['cold']:8.0f} patches/s  {runs['cold']}")
    print(f"end to end: helpkit heatmap, --batch {args.batch:<8} {rate['e2e']:8.0f} patches/s  {runs['e2e']}")
    print(f"end to end: --batch 0 (measured){' --xla' if xla else '      '}       {rate['tuned']:8.0f} patches/s  "
          f"{runs['tuned']}")
    print(f"engine alone, warm model (steady state)       {rate['engine']:8.0f} patches/s  {runs['engine']}")
    print(f"per patch: read + model.predict each          {slow:8.1f} patches/s  ({args.per_patch} patches; "
          f"{n / slow / 60:.0f} min extrapolated to this slide)")
    median = {k: n / float(np.median(v)) for k, v in times.items()}
    print(f"end to end / limit              = {rate['e2e'] / rate['limit']:.2f}  "
          f"({median['e2e'] / median['limit']:.2f} on medians)")
    print(f"end to end tuned / limit        = {rate['tuned'] / rate['limit']:.2f}  "
          f"({median['tuned'] / median['limit']:.2f} on medians)")
    print(f"end to end / model.predict      = {rate['e2e'] / rate['predict']:.2f}  (the former ratio)")
    print(f"model.predict / limit           = {rate['predict'] / rate['limit']:.2f}")
    print(f"engine / limit (steady state)   = {rate['engine'] / rate['limit']:.2f}")
    print(f"end to end / per patch          = {rate['e2e'] / slow:.0f}x  (target >= 20x)")


def tta_cost(args: argparse.Namespace, work: Path, model) -> None:
    """Print the engine's patches/s with a warm model under each TTA, interleaved, and the ratio to none."""
    slide, n = bench_slide(work, args.min_patches, args.size)
    predictors = {name: tta_predict(model.predict_on_batch, name) for name in TTAS}
    times: dict[str, list[float]] = {name: [] for name in TTAS}
    with SlideReader(slide) as reader:
        grid = grid_for(reader, GEOMETRY)
        tissue = tissue_grid(grid, tissue_mask(reader))
        for predict in predictors.values():  # the first call traces: not timed
            predict(np.zeros((args.batch, PATCH, PATCH, 3), np.uint8))
        for _ in range(args.repeats):  # interleaved, so every TTA sees the same machine load
            for name, predict in predictors.items():
                start = time.perf_counter()
                run_heatmap(reader, predict, grid, tissue, batch_size=args.batch)
                times[name].append(time.perf_counter() - start)
    rate = {name: n / min(v) for name, v in times.items()}
    print(f"test-time augmentation: engine, warm model, {slide.name}, {n} tissue patches, --batch {args.batch} "
          f"(best of {args.repeats})")
    print(f"  {'tta':<6} {'passes':>6} {'patches/s':>10} {'/ none':>7} {'1/passes':>9}  runs (patches/s)")
    for name in TTAS:
        passes = len(tta_transforms(name))
        print(f"  {name:<6} {passes:>6} {rate[name]:>10.0f} {rate[name] / rate['none']:>7.3f} {1 / passes:>9.3f}  "
              f"{[round(n / t) for t in times[name]]}")


def memory(args: argparse.Namespace, work: Path, model) -> None:
    """Print the peak RSS of the real ``helpkit heatmap`` command on slides of each of ``args.sizes``."""
    helpkit = str(Path(sys.executable).with_name("helpkit"))
    geometry = PatchGeometry(mpp=args.memory_mpp, patch_size=PATCH)
    mem_run = make_run(work / f"simple_m{args.memory_mpp:g}", model, geometry)
    print(f"peak RSS of `helpkit heatmap` at {args.memory_mpp:g} um/px ({PATCH}px patches, "
          f"{PATCH * args.memory_mpp / 0.25:g} level-0 px), one slide per call:")
    for size in args.sizes:
        data = work / f"memory_{size}" / "test"
        data.mkdir(parents=True, exist_ok=True)
        big = data / f"Slide{size}.tiff"
        if not big.exists():
            start = time.perf_counter()
            make_slide(big, size, seed=11, positive=True)
            print(f"  (made {size} x {size} slide in {time.perf_counter() - start:.0f} s)")
        cells = tissue_cells(big, geometry)
        rss, wall = peak_rss_of([helpkit, "heatmap", "--model", str(mem_run), "--data", str(data),
                                 "--out", str(work / "heatmaps_memory"), "--force"])
        print(f"  {size:>7} x {size:<7} {cells:>7} tissue patches: peak RSS {rss:7.0f} MiB, "
              f"{wall:.0f} s, {cells / wall:.0f} patches/s incl. start-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-patches", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=39680, help="first slide side tried for --min-patches")
    parser.add_argument("--batch", type=int, default=256, help="batch of model.predict and the default end to end")
    parser.add_argument("--limit-batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048],
                        help="batch sizes the compiled-forward limit is measured at")
    parser.add_argument("--sweep-s", type=float, default=8.0, help="seconds of the limit's batch-size sweep, per XLA setting")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-patch", type=int, default=200, help="patches timed for the per-patch loop")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000], help="slide sides for memory")
    parser.add_argument("--memory-mpp", type=float, default=1.0, help="patch um/px of the memory runs (level 2)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-tta", action="store_true", help="leave out the test-time augmentation costs")
    parser.add_argument("--work", type=Path, help="keep slides here between runs (default: a temp folder)")
    args = parser.parse_args()

    from helpkit.models import build

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_heatmap_"))
    work.mkdir(parents=True, exist_ok=True)
    model = build("simple", PATCH)
    if not args.skip_throughput:
        throughput(args, work, model)
    if not args.skip_tta:
        tta_cost(args, work, model)
    if not args.skip_memory:
        memory(args, work, model)


if __name__ == "__main__":
    main()
