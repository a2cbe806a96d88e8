"""Bench: training and inference patches/s of a patch CNN on the GPU (on the CPU when there is
none, and it says so), each as a ratio to the compiled-forward limit.

All on in-memory uint8 patches (no slide reading: ``bench_heatmap.py`` and ``bench_read.py``
time that), the ``--model`` architecture at ``--patch-size``:

- limit: ``helpkit.models.compute.forward`` (one compiled tf.function), the fastest of
  ``--batches`` x {no XLA, XLA}, in float32 and in mixed precision;
- inference as ``helpkit heatmap`` runs it: ``predict_on_batch`` at ``--batch`` (the default
  predictor), and the compiled forward in mixed precision / XLA (``--mixed-precision``, ``--xla``);
- training as ``helpkit train`` runs it: ``model.fit`` on a tf.data pipeline of the patches,
  batch ``--train-batch``, float32 and mixed precision, XLA off and on.

Each rate is the best of ``--repeats`` timed runs of about ``--seconds`` after a warm-up.

    .venv/bin/python bench/bench_gpu.py [--model simple] [--patch-size 64] [--seconds 3]

On this project's 2-core CPU machine (no GPU), ``--seconds 1 --repeats 1`` takes about two
minutes; on a CPU the mixed-precision training row without XLA is skipped unless ``--all``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def device_line() -> tuple[bool, str]:
    """(GPU present, what this runs on in words)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        built = "built with CUDA" if tf.test.is_built_with_cuda() else "tensorflow-cpu"
        return False, f"no GPU: running on the CPU ({os.cpu_count()} cores; TensorFlow {tf.__version__}, {built})"
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return True, f"GPU: {', '.join(names)} (TensorFlow {tf.__version__})"


def best_rate(call, patches_per_call: int, seconds: float, repeats: int) -> float:
    """Patches/s of ``call``: warm-up call, then the best of ``repeats`` runs of about ``seconds``."""
    call()
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:
            call()
            calls += 1
        best = max(best, calls * patches_per_call / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simple")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="helpkit heatmap's default batch")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096], help="limit's batch sizes")
    parser.add_argument("--train-batch", type=int, default=64, help="helpkit train's default batch")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="on a CPU too, train in mixed precision without XLA "
                        "(float16 convolutions without XLA run at a few patches/s there: minutes per row)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from helpkit.models.compute import build_model, forward, inference_model, jit_compile

    gpu, where = device_line()
    print(where)
    if not gpu:
        args.batches = [b for b in args.batches if b <= 1024] or [args.batch]
    p = args.patch_size
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (max(args.batches + [args.batch, args.train_batch * 8]), p, p, 3), dtype=np.uint8)
    keras.utils.set_random_seed(0)
    model = build_model(args.model, p)
    mixed = inference_model(model, args.model, p, mixed_precision=True)

    def forward_rate(m, xla: bool, batch: int) -> float:
        function = forward(m, xla=xla)
        chunk = pool[:batch]
        return best_rate(lambda: function(chunk), batch, args.seconds, args.repeats)

    rows: dict[str, float] = {}
    limits = {}
    for precision, m in (("float32", model), ("mixed", mixed)):
        for xla in (False, True):
            for batch in args.batches:
                limits[(precision, xla, batch)] = forward_rate(m, xla, batch)
    (lp, lx, lb), limit = max(limits.items(), key=lambda kv: kv[1])
    print("compiled forward, patches/s: " + "; ".join(
        f"{pr}{' XLA' if x else ''} b{b}: {r:.0f}" for (pr, x, b), r in limits.items()))
    print(f"{'limit: compiled forward (' + lp + (', XLA' if lx else '') + f', batch {lb})':52s} {limit:9.0f} patches/s")

    chunk = pool[: args.batch]
    rows[f"inference: predict_on_batch, batch {args.batch} (default)"] = best_rate(
        lambda: model.predict_on_batch(chunk), args.batch, args.seconds, args.repeats)
    rows[f"inference: --xla, batch {args.batch}"] = forward_rate(model, True, args.batch)
    rows[f"inference: --mixed-precision, batch {args.batch}"] = forward_rate(mixed, False, args.batch)
    rows[f"inference: --mixed-precision --xla, batch {args.batch}"] = forward_rate(mixed, True, args.batch)

    x = pool[: args.train_batch * 8]
    y = (rng.random(len(x)) < 0.5).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.train_batch).repeat().prefetch(tf.data.AUTOTUNE)
    steps = 8
    for precision in ("float32", "mixed"):
        for xla in (False, True):
            if precision == "mixed" and not xla and not gpu and not args.all:
                print("training in mixed precision without XLA: skipped on the CPU (4 patches/s measured; --all runs it)")
                continue
            keras.utils.set_random_seed(0)
            m = build_model(args.model, p, mixed_precision=precision == "mixed")
            m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=jit_compile(xla))
            name = f"training: model.fit, batch {args.train_batch}, {precision}{', XLA' if xla else ''}"
            rows[name] = best_rate(lambda m=m: m.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False),
                                   steps * args.train_batch, args.seconds, args.repeats)
    for name, rate in rows.items():
        print(f"{name:52s} {rate:9.0f} patches/s  {rate / limit:5.2f} of the limit")


if __name__ == "__main__":
    main()
