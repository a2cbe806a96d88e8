"""Training throughput of the full input pipeline against model.fit on in-memory arrays.

Trains the same model (same batch size, same patches) several ways in one process and
prints patches/s and each pipeline's ratio to the in-memory baseline:

- baseline:       ``model.fit`` on uint8 numpy arrays already in memory (no augmentation);
- cache + PRESET: ``patch_dataset`` over the memory-mapped patch cache, augmented with each
                  preset (none, flips, light, medium, strong; a preset with random rescale
                  reads its cache with the margin, ``augment_spec.read_size``);
- slides + light: ``patch_dataset`` reading every batch from the slides (threaded OpenSlide
                  readers, one handle per slide), with the default augmentation;
- in step + PRESET (``--in-step``): the same cache batches, not augmented in tf.data, but by the
                  training step itself (the same ``augment`` with the same per-batch seeds, run in
                  the step's graph on the step's threads): what the augmentation costs when it
                  does not compete with the step for the cores. Compiled without XLA (JPEG and
                  ``crop_and_resize`` have no XLA kernels), so on a GPU the jitters run on the
                  device and those two on the host.

Each way is timed over its second and later epochs (the first traces and compiles), over
several interleaved rounds, best round kept, so the machine's other load hurts all alike.
Target: every cache + PRESET >= 0.9 of baseline.

Each pipeline is also timed alone, iterated without a model ("input alone"): the patches/s it
delivers with every core to itself, as on a machine whose training step runs on an accelerator.
Where that is below the in-memory rate, the input would slow training even there; where it is
above, the training ratio's shortfall is the augmentation sharing the CPU with the step.

    .venv/bin/python bench/bench_train.py [--data COMPETITION] [--model simple] [--patches 2048]
        [--augment NAME ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # grappler warns once per trace that it cannot cost CropAndResize
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class InStepAugment(keras.Model):
    """``model`` (its layers and weights shared) trained on ((uint8 batch, seed), y, w) batches
    that its train step augments itself."""

    def __init__(self, model: keras.Model, config, patch_size: int) -> None:
        super().__init__()
        self.inner, self.config, self.patch_size = model, config, patch_size

    def call(self, x, training: bool = False):
        return self.inner(x, training=training)

    def train_step(self, data):
        from helpkit.train.augment import augment

        (x, seed), y, w = data
        return super().train_step((augment(x, seed, self.config, self.patch_size), y, w))


def throughput(model: keras.Model, n: int, epochs: int, **fit_args) -> float:
    """Patches per second over every epoch but the first."""
    timer = EpochTimer()
    model.fit(epochs=epochs, callbacks=[timer], verbose=0, shuffle=False, **fit_args)
    return n / min(timer.seconds[1:])


def input_rate(dataset, n: int, epochs: int) -> float:
    """Patches per second of iterating ``dataset`` alone, no model: best of every epoch but the first."""
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in dataset:
            pass
        seconds.append(time.perf_counter() - start)
    return n / min(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="competition root (default: a generated 4-slide one)")
    parser.add_argument("--model", default="simple")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--patches", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per way and round (first not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--augment", nargs="+", default=None, help="presets to time (default: all)")
    parser.add_argument("--in-step", action="store_true",
                        help="also time each preset augmented inside the training step instead of in tf.data")
    args = parser.parse_args()

    from helpkit.data import discover
    from helpkit.models import build
    from helpkit.slide.index import index_dataset
    from helpkit.synth import make_competition
    from helpkit.train.augment_spec import AUGMENTATIONS, DEFAULT_AUGMENT, read_size
    from helpkit.train.cache import PatchCache, open_cache
    from helpkit.train.dataset import SlidePatches, augment_seeds, patch_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = args.data or make_competition(work / "competition", n_train=4, n_test=1, size=4096, seed=0)
    slides = discover(data)
    index = index_dataset(slides[slides["split"] == "train"], progress=False).patches
    index = index[index["label"] >= 0].sample(frac=1.0, random_state=0).head(args.patches).reset_index(drop=True)
    n, rows, labels = len(index), np.arange(len(index)), index["label"].to_numpy()

    patch_size = int(index["patch_size"].iloc[0])
    presets = {name: AUGMENTATIONS[name] for name in args.augment or AUGMENTATIONS}
    start = time.perf_counter()
    cache = open_cache(index, work / "cache", progress=False)
    cache_build = time.perf_counter() - start
    caches = {size: open_cache(index, work / "cache", progress=False, read_size=size)
              for size in {read_size(patch_size, config.rescale) for config in presets.values()}}
    images = np.asarray(cache.patches)  # the baseline's in-memory copy of the very same patches
    slides_source = SlidePatches(index)

    model = build(args.model, patch_size=patch_size, width=args.width)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])

    def cache_for(config) -> PatchCache:
        """The cache a preset reads: with its rescale margin, if any."""
        return caches[read_size(patch_size, config.rescale)]

    def datasets() -> dict[str, tuple]:
        """Each pipeline way's source and augmentation."""
        return {**{f"cache + {name}": (cache_for(config), config) for name, config in presets.items()},
                f"slides + {DEFAULT_AUGMENT}": (slides_source, AUGMENTATIONS[DEFAULT_AUGMENT])}

    def pipeline(source, config, train: bool) -> float:
        dataset = patch_dataset(source, rows, labels, args.batch, training=True, augmentation=config,
                                patch_size=patch_size)
        return throughput(model, n, args.epochs, x=dataset) if train else input_rate(dataset, n, args.epochs)

    def in_step(source, stepper: keras.Model) -> float:
        batches = patch_dataset(source, rows, labels, args.batch, training=True, augmentation=None)
        dataset = tf.data.Dataset.zip(batches, augment_seeds(0)).map(lambda b, s: ((b[0], s), b[1], b[2]))
        return throughput(stepper, n, args.epochs, x=dataset.prefetch(tf.data.AUTOTUNE))

    steppers = {}
    for name, config in presets.items() if args.in_step else ():
        steppers[name] = InStepAugment(model, config, patch_size)
        steppers[name].compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], jit_compile=False)

    baseline = "baseline (arrays)"
    ways = {(baseline, True): lambda: throughput(model, n, args.epochs, x=images, y=labels.astype("float32"),
                                                 batch_size=args.batch),
            **{(name, train): (lambda s=source, c=config, t=train: pipeline(s, c, t))
               for name, (source, config) in datasets().items() for train in (True, False)},
            **{(f"in step + {name}", True): (lambda s=cache_for(presets[name]), m=stepper: in_step(s, m))
               for name, stepper in steppers.items()}}
    best = dict.fromkeys(ways, 0.0)
    for _ in range(args.rounds):
        for key, run in ways.items():
            best[key] = max(best[key], run())
    slides_source.close()

    base = best[(baseline, True)]
    print(f"model {args.model} width {args.width}, batch {args.batch}, {n} patches of "
          f"{images.shape[1]}px; cache built in {cache_build:.1f} s ({n / cache_build:.0f} patches/s)")
    print(f"{'way':18s} {'patches/s':>10s} {'ratio':>6s}  {'input alone':>11s} {'ratio':>6s}")
    for (name, train), value in best.items():
        if not train:
            continue
        mark = "  below 0.9" if name.startswith("cache") and value < 0.9 * base else ""
        rate = best.get((name, False))
        solo = f"  {rate:11.1f} {rate / base:6.2f}" if rate else f"  {'-':>11s} {'-':>6s}"
        print(f"{name:18s} {value:10.1f} {value / base:6.2f}{solo}{mark}")

if __name__ == "__main__":
    main()
