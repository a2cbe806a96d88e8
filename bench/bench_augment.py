"""Does the training augmentation scale with the cores tf.data is given? Patches/s per preset and
number of parallel calls, against one call at a time in the same run.

One uint8 batch (``--batch`` patches of ``PATCH`` px, read with the preset's rescale margin) is repeated
through ``Dataset.map(augment, num_parallel_calls=N)`` with a fresh seed per batch, as
``patch_dataset`` maps it, without reading patches or a model: the augmentation's own throughput.
Each case runs two passes of ``--patches`` patches and keeps the second (the first traces). For
each it prints patches/s, the ratio to the same preset's first case (``--parallel``'s first value),
the cores it kept busy (process CPU time over wall time) and the share of that CPU time spent in
the kernel. ``--intra 1`` sets tf.data's ``max_intra_op_parallelism`` to 1 (each call on one thread);
0 leaves TensorFlow's default.

``--parts`` adds, after each preset, its flips and rotations alone (``preset:symmetries``), then
every other parameter it switches on, alone with them (a margin read only for ``rescale``):
where the preset's time goes. ``hed_scale`` and ``hed_bias`` each run Tellez's whole jitter.

    .venv/bin/python bench/bench_augment.py [--presets light medium strong] [--parallel 1 4 16]
        [--intra 1 0] [--batch 64] [--patches 6400] [--parts]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # grappler warns once per trace that it cannot cost CropAndResize

import numpy as np  # noqa: E402

from helpkit.train.augment_spec import AUGMENTATIONS, AugmentConfig, read_size  # noqa: E402  (no TensorFlow)

PATCH = 64
"""The model's patch side in pixels (a preset with rescale reads a margin around it)."""


def cpu_seconds() -> tuple[float, float]:
    """(user + system, system) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def cases(preset: str, parts: bool) -> dict[str, AugmentConfig]:
    """The preset by its name, then (with ``parts``) its symmetries alone and each other parameter it
    switches on with them, as ``preset:param``."""
    config = AUGMENTATIONS[preset]
    out = {preset: config}
    if parts:
        bare = dataclasses.replace(AUGMENTATIONS["none"], symmetries=config.symmetries)  # "none": every parameter off
        out[f"{preset}:symmetries"] = bare
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if value and field.name != "symmetries":
                out[f"{preset}:{field.name}"] = dataclasses.replace(bare, **{field.name: value})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["light", "medium", "strong"], choices=list(AUGMENTATIONS))
    parser.add_argument("--parallel", nargs="+", type=int, default=[1, 4, 16], help="num_parallel_calls values")
    parser.add_argument("--intra", nargs="+", type=int, default=[1, 0], choices=[0, 1],
                        help="tf.data max_intra_op_parallelism (0: TensorFlow's default)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--patches", type=int, default=6400, help="patches per timed pass")
    parser.add_argument("--parts", action="store_true", help="also time each parameter of a preset alone")
    args = parser.parse_args()

    import tensorflow as tf  # after parsing: a typo fails at once

    from helpkit.train.augment import augment

    rng = np.random.default_rng(0)
    batches = max(2, args.patches // args.batch)
    print(f"{os.cpu_count()} cores, TensorFlow {tf.__version__}; {batches} batches of {args.batch} patches a pass")
    print(f"{'case':24s} {'intra':>5s} {'parallel':>8s} {'patches/s':>10s} {'ratio':>6s} {'cores':>6s} {'sys':>5s}")
    for name, config in ((n, c) for preset in args.presets for n, c in cases(preset, args.parts).items()):
        side = read_size(PATCH, config.rescale)
        batch = tf.constant(rng.integers(0, 256, (args.batch, side, side, 3), dtype=np.uint8))
        first = None
        for intra in args.intra:
            for parallel in args.parallel:
                dataset = tf.data.Dataset.from_tensors(batch).repeat(batches).enumerate().map(
                    lambda i, x, c=config: augment(x, tf.stack([i, i + 1]), c, PATCH),
                    num_parallel_calls=parallel, deterministic=True).prefetch(4)
                if intra:
                    options = tf.data.Options()
                    options.threading.max_intra_op_parallelism = intra
                    dataset = dataset.with_options(options)
                for _pass in range(2):
                    (cpu0, sys0), start = cpu_seconds(), time.perf_counter()
                    for _batch in dataset:
                        pass
                    wall, (cpu1, sys1) = time.perf_counter() - start, cpu_seconds()
                rate = batches * args.batch / wall
                first = first or rate
                print(f"{name:24s} {intra:5d} {parallel:8d} {rate:10.0f} {rate / first:6.2f} "
                      f"{(cpu1 - cpu0) / wall:6.2f} {(sys1 - sys0) / max(cpu1 - cpu0, 1e-9):5.2f}", flush=True)


if __name__ == "__main__":
    main()
