"""How a model computes: mixed precision and XLA, for training and inference alike.

- **Mixed precision** (``mixed_precision=True``): Keras' ``mixed_float16`` dtype policy, set
  while the model is built: layers compute in float16 and keep float32 variables; the output
  layer (``probability``) is float32 whatever the policy (``blocks.centre_mean_probability``),
  and ``model.compile`` wraps the optimizer in a ``LossScaleOptimizer`` itself. It pays on a
  GPU with tensor cores; on a CPU it runs, slower. A model trained in float32 runs in mixed
  precision by being rebuilt under the policy with the same weights (``inference_model``).
- **XLA** (``xla``): ``jit_compile`` of ``model.compile`` for training (``None`` keeps Keras'
  ``"auto"``: XLA on a GPU, not on a CPU) and of the compiled forward pass for inference.

``forward(model, xla)`` is the fastest way helpkit knows to run a model on in-memory uint8
patches: one ``tf.function`` over the model's call (no ``predict`` loop, no callbacks),
traced once per batch shape. The heatmap bench's limit is this function at its best batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

MIXED_POLICY = "mixed_float16"
PREDICTION_TOLERANCE = {"mixed_precision": 2e-2, "xla": 1e-4}
"""Largest absolute difference of a probability from float32 without XLA that the tests allow:
float16 keeps 10 bits of mantissa (about 3 significant digits through a few layers); XLA
only reorders float32 arithmetic."""


@contextmanager
def dtype_policy(mixed_precision: bool) -> Iterator[None]:
    """Keras' global dtype policy set to ``mixed_float16`` (or left as it is) inside the block."""
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def is_mixed(model: keras.Model) -> bool:
    """Whether ``model`` computes in float16 (built under the mixed policy)."""
    return any(getattr(layer, "compute_dtype", "float32") == "float16" for layer in model.layers)


def build_model(architecture: str, patch_size: int, width: float = 1.0, mixed_precision: bool = False) -> keras.Model:
    """``helpkit.models.build`` under the mixed policy when ``mixed_precision``."""
    from helpkit.models import build

    with dtype_policy(mixed_precision):
        return build(architecture, patch_size, width)


def inference_model(model: keras.Model, architecture: str, patch_size: int, width: float = 1.0,
                    mixed_precision: bool = False) -> keras.Model:
    """``model`` as it should run: rebuilt under the mixed policy with its weights when
    ``mixed_precision`` and it is not mixed already; otherwise ``model`` itself."""
    if not mixed_precision or is_mixed(model):
        return model
    mixed = build_model(architecture, patch_size, width, mixed_precision=True)
    mixed.set_weights(model.get_weights())
    return mixed


def jit_compile(xla: bool | None) -> bool | str:
    """``model.compile``'s ``jit_compile`` for ``xla`` (None: Keras' ``"auto"``)."""
    return "auto" if xla is None else bool(xla)


def forward(model: keras.Model, xla: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled forward pass: uint8 (batch, p, p, 3) patches -> float32 (batch,) probabilities.

    One ``tf.function`` (``jit_compile=xla``) around ``model(x, training=False)``; each new
    batch size traces once, so callers keep batches one size (the heatmap engine pads).
    """
    import tensorflow as tf

    @tf.function(jit_compile=bool(xla), reduce_retracing=True)
    def call(batch: Any) -> Any:
        return tf.reshape(tf.cast(model(batch, training=False), tf.float32), [-1])

    def run(batch: np.ndarray) -> np.ndarray:
        return call(tf.convert_to_tensor(batch)).numpy()

    return run


def best_batch_size(predict: Callable[[np.ndarray], np.ndarray], patch_size: int,
                    sizes: Sequence[int] = (64, 128, 256, 512, 1024), budget_s: float = 1.0) -> tuple[int, dict[int, float]]:
    """The batch size of ``sizes`` at which ``predict`` runs most patches per second, by measurement.

    Each size is called once to trace (untimed), then timed over about ``budget_s / len(sizes)``
    seconds (at least two calls). Returns (the best size, patches/s of every size).
    """
    rates: dict[int, float] = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        batch = rng.integers(0, 256, (size, patch_size, patch_size, 3), dtype=np.uint8)
        predict(batch)  # trace / warm up
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < budget_s / len(sizes):
            predict(batch)
            calls += 1
        rates[size] = calls * size / (time.perf_counter() - start)
    return max(rates, key=lambda s: rates[s]), rates
