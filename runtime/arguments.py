"""One validation of the runtime's arguments, shared by the Python API and every CLI command.

train, evaluate and attack (and their commands) check radii, step sizes, counts, parameter
values, batches and model outputs here, so a value refused by one is refused by all, with the
same message. Every refusal is an InputError (a RobustspecError and a ValueError) saying what
to pass instead. The searches the runtime runs are built here too (`pgd`), once.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Mapping

import torch

from robustspec.compiler import PGD, Property
from robustspec.dsl.errors import InputError, TrainingError

RADIUS_PARAMS = ("eps",)  # the runtime's radius parameter: swept by evaluate, set by --eps


def _number(value, name: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number


def radius(value, name: str = "eps") -> float:
    """A finite radius >= 0: a negative one makes the property's domain empty (vacuous)."""
    number = _number(value, name)
    if number < 0:
        raise InputError(f"{name} must be >= 0 (a radius; a negative one makes the domain empty "
                         f"and the property hold vacuously), got {value!r}")
    return number


def radii(values, name: str = "eps") -> list[float]:
    """One or more radii (evaluate's sweep)."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    values = list(values)
    if not values:
        raise InputError(f"{name} needs at least one value, e.g. 0,0.05,0.1")
    return [radius(v, name) for v in values]


def step_size(value, name: str = "step_size") -> float | None:
    """None (the search's default) or a finite number > 0."""
    if value is None:
        return None
    number = _number(value, name)
    if number <= 0:
        raise InputError(f"{name} must be > 0 (or left out for the default), got {value!r}")
    return number


def count(value, name: str, minimum: int = 0) -> int:
    """A whole number >= minimum."""
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise InputError(f"{name} must be a whole number, not {value!r}")
    if int(value) < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {int(value)}")
    return int(value)


def params(values: Mapping | None, what: str = "params") -> dict:
    """Parameter overrides, checked and returned as given: finite numbers; a radius parameter
    (eps) also >= 0."""
    values = dict(values or {})
    for key, value in values.items():
        label = f"{what} {key}" if what else str(key)
        (radius if key in RADIUS_PARAMS else _number)(value, label)
    return values


def batch(x, y, what: str) -> None:
    """x: a non-empty tensor [B, ...]; y: integer labels [B]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what}: x must be a torch.Tensor of inputs [B, ...], not "
                         f"{type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{what}: y must be a torch.Tensor of labels [B], not {type(y).__name__}")
    if x.dim() < 1 or len(x) == 0:
        raise InputError(f"{what}: x is empty (shape {tuple(x.shape)}); give at least one example")
    if not x.is_floating_point():
        raise InputError(f"{what}: x must hold floats (got {x.dtype}); convert with x.float()")
    if y.dim() != 1:
        raise InputError(f"{what}: y must be a vector of labels [B], got shape {tuple(y.shape)}"
                         + ("; use y.squeeze(1)" if y.dim() == 2 and y.shape[1] == 1 else ""))
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise InputError(f"{what}: y must hold integer class ids (got {y.dtype}); use y.long()")
    if len(y) != len(x):
        raise InputError(f"{what}: {len(x)} inputs but {len(y)} labels")


def finite_inputs(x: torch.Tensor, what: str) -> None:
    """No NaN or infinity in the points a property is checked at."""
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what}: x holds NaN or infinite values; a property checked there "
                         "means nothing. Clean the data first")


def logits(model: torch.nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """model(x) as a [B, classes] tensor, or an InputError saying what the model did instead."""
    try:
        out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"{what}: the model cannot take inputs of shape {tuple(x.shape)} "
                         f"({type(e).__name__}: {e}); give inputs the shape it was built for"
                         ) from None
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{what}: the model returned {type(out).__name__}, not a tensor of "
                         "logits [B, classes]; wrap it so forward() returns the logits")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise InputError(f"{what}: the model returned shape {tuple(out.shape)} for {len(x)} "
                         "inputs; the runtime needs logits [B, classes]")
    return out


def labels_fit(y: torch.Tensor, classes: int, what: str) -> None:
    """Every label is a class of the model's output (0..classes-1)."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise InputError(f"{what}: labels range over {int(y.min())}..{int(y.max())} but the model "
                         f"has {classes} outputs (classes 0..{classes - 1}); build it for the "
                         "dataset's class count")


@contextmanager
def evaluating(model):
    """Eval mode for the duration (an nn.Module's mode is restored after; a plain callable
    has none)."""
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise InputError(f"the model must be a torch.nn.Module or a callable, not "
                             f"{type(model).__name__}")
        yield model
        return
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def model_fits(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    """One forward pass on the first input (eval mode, no grad): a model that cannot take x,
    returns no logits, or has fewer outputs than the labels need is an InputError here, not a
    torch error deep inside a search."""
    with evaluating(model), torch.no_grad():
        out = logits(model, x[:1], what)
    labels_fit(y, out.shape[1], what)


def property_args(prop: Property, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Bind a batch to a property's arguments: its tensor argument gets x, its label y."""
    args = {}
    for name, ty in prop.args:
        if ty.kind == "real" and "x" not in args.values():
            args[name] = "x"
        elif ty.kind == "int" and "y" not in args.values():
            args[name] = "y"
        else:
            raise TrainingError(
                f"property '{prop.name}' takes ({', '.join(n for n, _ in prop.args)}); the runtime "
                "binds one input tensor and one label per example")
    return {k: (x if v == "x" else y) for k, v in args.items()}


def _per_example(flags: torch.Tensor, k: int) -> torch.Tensor:
    """[k] booleans: any flag set for each example (flags batched [k, ...] or shared)."""
    flags = flags.detach()
    if flags.dim() and flags.shape[0] == k:
        return flags.reshape(k, -1).any(1)
    return flags.reshape(-1).any().expand(k)


def domains_not_empty(prop: Property, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      params: dict | None, what: str) -> None:
    """Parameter values that leave a quantified variable no point at all, for every one of the
    first inputs (a negative radius, lo > hi), are an InputError: the property would hold
    vacuously and training, evaluation or an attack on it would measure nothing."""
    from robustspec.compiler.domains import realise

    k = min(len(x), 8)
    domains = realise(prop, model, params=params, **property_args(prop, x[:k], y[:k]))
    for var, d in domains.items():
        empty = torch.zeros(k, dtype=torch.bool)
        if d.lo is not None and d.hi is not None:
            empty |= _per_example(d.lo > d.hi, k)
        if d.l2 is not None:
            empty |= _per_example(d.l2[1] < 0, k)
        if bool(empty.all()):
            given = {**prop.params, **(params or {})}
            raise InputError(f"{what}: with parameters {given} the domain of '{var}' in "
                             f"property '{prop.name}' is empty (a negative radius, or a lower "
                             "bound above the upper one): the property would hold vacuously. "
                             "Give parameter values that leave points to check")


def pgd(steps: int = 50, step_size_: float | None = None, restarts: int = 1) -> PGD:
    """The runtime's PGD search (training, evaluation and attacks build it here, once)."""
    return PGD(steps=count(steps, "steps", 0), step_size=step_size(step_size_),
               restarts=count(restarts, "restarts", 1))


__all__ = ["radius", "radii", "step_size", "count", "params", "batch", "finite_inputs", "logits",
           "labels_fit", "model_fits", "evaluating", "pgd", "property_args",
           "domains_not_empty", "RADIUS_PARAMS"]
