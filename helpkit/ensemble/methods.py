"""The one registry of ensemble methods: names, estimators, parameters, descriptions.

``submission.toml``'s ``[ensemble] method`` and ``params``, ``helpkit ensemble fit --method
--param`` and the candidate table of ``helpkit ensemble report`` (and so the HTML report) all
read ``REGISTRY``. This module imports nothing heavy (no scikit-learn, no LightGBM), so a
config is checked in milliseconds: a typo in a parameter name or a value of the wrong type is
a one-line error when the config loads, before any model trains.

Adding a method: an estimator with ``fit``/``predict_proba``/``get_params``/``save``/``load``
in ``helpkit/ensemble/``, and one ``Method`` here whose ``params`` list every ``__init__``
argument the user may set (a test checks they match the estimator's ``get_params()``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Literal

from helpkit.errors import HelpkitError

Columns = Literal["one", "scores", "features"]


@dataclass(frozen=True)
class Param:
    """One estimator parameter: its type, default, allowed range or choices, and help."""

    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """``low`` itself is excluded (``> low`` rather than ``>= low``)."""
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        what = self.kind.__name__
        if self.choices:
            what = "|".join(self.choices)
        elif self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"<= {self.high:g}"
            what += " " + ", ".join(p for p in (lo, hi) if p)
        return what

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it has this parameter's type and range (an int is a float too); else ValueError."""
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r} ({type(value).__name__})")
        if self.choices and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def parse(self, name: str, text: str) -> Any:
        """A command-line string (``--param name=text``) as this parameter's type, checked."""
        text = text.strip()
        value: Any = text
        try:
            if self.kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = text.lower() in ("true", "1", "yes")
            elif self.kind is int:
                value = int(text)
            elif self.kind is float:
                value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be {self.describe()}, got {text!r}") from None
        return self.check(name, value)


@dataclass(frozen=True)
class Method:
    """One ensemble method: its estimator, which columns it reads, its parameters, what it is."""

    name: str
    estimator: str
    """``module:Class`` of the estimator, imported only when one is built."""
    columns: Columns
    """one: a single model's score; scores: each model's score (``<model>__max``); features: every feature."""
    description: str
    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    """Estimator arguments the method sets itself (not user parameters)."""
    candidate: bool = True
    """Whether ``helpkit ensemble report`` compares it (``single`` is compared once per model instead)."""

    def estimator_class(self) -> type:
        module, _, name = self.estimator.partition(":")
        return getattr(import_module(module), name)


_SEED = Param(int, 0, "Seed of the estimator's own randomness.")
_BLEND = {
    "normalisation": Param(str, "rank", "How each model's scores are put on one scale before averaging.",
                           choices=("rank", "zscore", "logit", "none")),
    "n_rounds": Param(int, 25, "Rounds of greedy (Caruana) selection.", low=1),
    "inner_splits": Param(int, 3, "Inner CV folds that choose the weight method (tuned).", low=2),
    "random_state": _SEED,
}
_LGBM = {
    "n_estimators": Param(int, 100, "Boosting rounds (trees).", low=1),
    "learning_rate": Param(float, 0.05, "Shrinkage of each tree.", low=0.0, low_open=True),
    "num_leaves": Param(int, 4, "Leaves per tree.", low=2),
    "max_depth": Param(int, 2, "Depth limit per tree (-1: none).", low=-1),
    "min_child_samples": Param(int, 5, "Fewest slides in a leaf.", low=1),
    "reg_lambda": Param(float, 5.0, "L2 regularisation of leaf values.", low=0.0),
    "subsample": Param(float, 0.8, "Fraction of slides drawn for each tree.", low=0.0, high=1.0, low_open=True),
    "colsample_bytree": Param(float, 0.8, "Fraction of features drawn for each tree.", low=0.0, high=1.0,
                              low_open=True),
    "random_state": _SEED,
    "n_jobs": Param(int, 1, "Threads LightGBM uses.", low=1),
    "min_slides": Param(int, 40, "Fewer training slides than this: no trees, the logistic model of the "
                        "models' max probabilities alone (0: always trees).", low=0),
    "tie_break": Param(float, 0.01, "Weight of that logistic model mixed into the trees' output, so slides "
                       "the trees tie are still ranked (0: trees alone).", low=0.0, high=1.0),
}

REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("single", "helpkit.ensemble.blend:BlendClassifier", "one",
           "one model's max heatmap probability (the best model by AUC unless model= names one)",
           params={"model": Param(str, "", "The model whose score is used; empty: the best on the labelled slides.")},
           fixed={"method": "mean", "normalisation": "none"}, candidate=False),
    Method("mean", "helpkit.ensemble.blend:BlendClassifier", "scores",
           "equal-weight blend of each model's normalised max probability", params=_BLEND, fixed={"method": "mean"}),
    Method("tuned", "helpkit.ensemble.blend:BlendClassifier", "scores",
           "blend whose weights (mean, greedy or optimised) are chosen by inner cross-validation",
           params=_BLEND, fixed={"method": "tuned"}),
    Method("logreg", "helpkit.ensemble.stack:LogisticStacker", "features",
           "L2 logistic regression over every slide feature (median-imputed, standardised)",
           params={"C": Param(float, 0.1, "Inverse regularisation strength (small: strong shrinkage).", low=0.0,
                              low_open=True),
                   "max_iter": Param(int, 1000, "Solver iterations.", low=1)}),
    Method("lgbm", "helpkit.ensemble.stack:LGBMStacker", "features",
           "LightGBM gradient-boosted trees over every slide feature, small-data defaults; "
           "a logistic model of the max probabilities breaks ties and stands in below min_slides", params=_LGBM),
)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method ``name``; a one-line error listing the others."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise HelpkitError(f"unknown ensemble method {name!r}; choose one of {', '.join(NAMES)}") from None


def _unknown(method: Method, key: str) -> str:
    close = difflib.get_close_matches(key, method.params, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    known = ", ".join(method.params) or "none"
    return f"unknown parameter {key!r}{hint}; {method.name} takes: {known}"


def check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against method ``name``'s parameters; ValueError (one line) at the first problem."""
    method = REGISTRY.get(name)
    if method is None:
        raise ValueError(f"unknown ensemble method {name!r}; choose one of {', '.join(NAMES)}")
    checked = {}
    for key, value in params.items():
        if key not in method.params:
            raise ValueError(_unknown(method, key))
        checked[key] = method.params[key].check(key, value)
    return checked


def parse_params(name: str, items: list[str]) -> dict[str, Any]:
    """``--param key=value`` strings as method ``name``'s typed, checked parameters (HelpkitError)."""
    method = get(name)
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HelpkitError(f"--param takes KEY=VALUE, got {item!r}")
        if key not in method.params:
            raise HelpkitError(f"--param: {_unknown(method, key)}")
        try:
            params[key] = method.params[key].parse(key, text)
        except ValueError as err:
            raise HelpkitError(f"--param: {err} (ensemble method {name})") from None
    return params


def build(name: str, params: dict[str, Any]) -> Any:
    """An unfitted estimator of method ``name`` with checked ``params`` (``model`` is not an estimator argument)."""
    method = get(name)
    try:
        checked = check_params(name, params)
    except ValueError as err:
        raise HelpkitError(f"bad parameter for ensemble method {name!r}: {err}") from None
    checked.pop("model", None)
    return method.estimator_class()(**method.fixed, **checked)


def describe() -> str:
    """One line per method, for help texts: ``name: description``."""
    return "; ".join(f"{m.name}: {m.description}" for m in REGISTRY.values())
