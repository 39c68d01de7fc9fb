"""Binding a call's arguments to a property: networks, arguments, parameters and `at=` points
checked and turned into one evaluation context (`Ctx`).

Every refusal is an InputError (robustspec.dsl.errors; also a ValueError, and the ones about
what was passed rather than its values also a TypeError, as before), and says what to pass.
"""
from __future__ import annotations

import difflib
import math
import re

import torch

from robustspec.dsl.errors import InputError

from .lower import Ctx
from .options import SEARCH_OPTIONS
from .search import Search, make_search


class ArgumentTypeError(InputError, TypeError):
    """A call got the wrong kind of argument (a missing network, an unknown name, a non-number)."""


def split_search(search, kwargs: dict) -> tuple[Search, dict]:
    """The search strategy (from `search` and the search options among kwargs) and the rest."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in SEARCH_OPTIONS}
    try:
        return make_search(search, **options), kwargs
    except InputError:
        raise
    except TypeError as e:
        raise ArgumentTypeError(str(e)) from None
    except ValueError as e:
        raise InputError(str(e)) from None


def points_of(prop, at) -> dict:
    """`at=` (a Found, a dict, or one tensor for a property with one variable) as a dict."""
    if at is None:
        return {}
    names = prop.variables
    if isinstance(at, dict) or hasattr(at, "points"):
        pts = dict(at if isinstance(at, dict) else at.points)
        unknown = [k for k in pts if k not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            raise ArgumentTypeError(f"at= names '{unknown[0]}', which '{prop.name}' does not quantify"
                                    + (f"; did you mean '{close[0]}'?" if close else "")
                                    + f" (its variables: {', '.join(names) or 'none'})")
        return pts
    if len(names) != 1:
        raise ArgumentTypeError(f"'{prop.name}' quantifies {names}: pass at={{name: tensor}}")
    return {names[0]: at}


def _networks(prop, model, networks) -> dict:
    nets = dict(networks or {})
    if model is not None:
        if len(prop.networks) != 1:
            raise ArgumentTypeError(f"the spec declares networks {sorted(prop.networks)}; pass "
                                    f"networks={{name: module}} instead of one model")
        nets[next(iter(prop.networks))] = model
    missing = [n for n in prop.networks if n not in nets]
    if missing:
        raise ArgumentTypeError(f"property '{prop.name}' needs network(s) {missing}: pass the model "
                                f"as the first argument or networks={{'{missing[0]}': model}}")
    for name, net in nets.items():
        if not callable(net):
            raise ArgumentTypeError(f"the network '{name}' must be a torch module or a function "
                                    f"of a tensor, not {type(net).__name__}")
    return nets


def _first_bad_row(ok: torch.Tensor) -> int:
    return int((~ok).nonzero()[0, 0])


def bind(prop, model, networks, args: dict, params: dict | None) -> Ctx:
    """Check a call's arguments against `prop` and make the context its closures run in."""
    nets = _networks(prop, model, networks)
    names = [n for n, _ in prop.args]
    unknown = [k for k in args if k not in names]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, names + sorted(SEARCH_OPTIONS), n=1)
        raise ArgumentTypeError(f"property '{prop.name}' has no argument '{k}'"
                                + (f"; did you mean '{close[0]}'?" if close else "")
                                + f" (its arguments: {', '.join(names) or 'none'})")
    absent = [n for n in names if n not in args]
    if absent:
        raise ArgumentTypeError(
            f"property '{prop.name}' needs argument(s) {absent} "
            f"(signature: {prop.name}({', '.join(f'{n} : {t}' for n, t in prop.args)}))")
    given = {}
    for n, _t in prop.args:
        try:
            given[n] = torch.as_tensor(args[n])
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentTypeError(f"argument '{n}' must be a tensor (or nested lists of numbers), "
                                    f"not {type(args[n]).__name__}") from None
    ref = next((given[n] for n, t in prop.args if t.kind == "real" and given[n].is_floating_point()),
               None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    vals: dict[str, torch.Tensor] = {}
    batch = None
    dims: dict[str, int] = {}
    for n, t in prop.args:
        v = given[n].to(device)
        if t.kind == "int":
            if v.is_floating_point():
                raise ArgumentTypeError(f"argument '{n}' is a label/index and must hold integers")
            v = v.long()
        else:
            v = v.to(dtype)
        if v.ndim == 0:
            raise ArgumentTypeError(f"argument '{n}' must be batched: the first axis is the batch")
        if v.shape[0] == 0:
            raise InputError(f"argument '{n}' has an empty batch (shape {list(v.shape)}): pass at "
                             "least one example")
        if batch is None:
            batch = v.shape[0]
        elif v.shape[0] != batch:
            raise InputError(f"batch sizes differ: '{n}' has {v.shape[0]} examples, "
                             f"others {batch}")
        if t.kind == "int" and t.shape == () and v.ndim > 1:
            raise InputError(f"argument '{n}' is one {t} per example: pass shape [batch] = "
                             f"[{batch}], got {list(v.shape)}"
                             + (" (e.g. y.squeeze(1))" if v.ndim == 2 and v.shape[1] == 1 else ""))
        # a finite sum means finite values (a NaN or an inf makes any sum non-finite): 26 us
        # on a batch of 128 images against 280 us for the per-example test, which runs only
        # when the sum is not finite (a bad value, or a sum that overflowed); the sum read as
        # a Python float (one op, not isfinite's five on a 0-dim tensor)
        if t.kind == "real" and not math.isfinite(v.sum().item()):
            finite = torch.isfinite(v.reshape(v.shape[0], -1)).all(1)
            if not bool(finite.all()):
                i = _first_bad_row(finite)
                raise InputError(f"argument '{n}' has NaN or infinite values (example {i} of "
                                 f"{batch}): pass finite numbers")
        if t.kind == "real" and t.shape is not None:
            want = t.shape
            got = tuple(v.shape[1:])
            ok = len(want) == len(got) and all(
                (w == g) if isinstance(w, int) else dims.setdefault(w, g) == g
                for w, g in zip(want, got))
            if not ok:
                raise InputError(f"argument '{n}' should have shape [batch, "
                                 f"{', '.join(map(str, want))}], got {list(v.shape)}")
        vals[n] = v
    for k, val in {**prop.params, **(params or {})}.items():
        if k not in prop.params:
            close = difflib.get_close_matches(k, list(prop.params), n=1)
            raise ArgumentTypeError(f"unknown parameter '{k}'"
                                    + (f"; did you mean '{close[0]}'?" if close else "")
                                    + f" (parameters: {', '.join(prop.params) or 'none'})")
        vals[k] = param_value(prop, k, val, dtype, device)
        if vals[k].ndim == 1 and len(vals[k]) not in (1, batch or 1):
            raise InputError(f"parameter '{k}' has {len(vals[k])} values but the batch has "
                             f"{batch} examples: give one number, or one per example")
    ctx = Ctx(vals, nets, None, dtype, device, batch or 1)
    if prop._needs_probe:
        prop._probe(ctx)
    return ctx


_OUTPUT_KEY = re.compile(r"\s*(\w+)\s*\(\s*(\w+)\s*\)\s*")


def known_outputs(prop, ctx: Ctx, outputs, args: dict) -> dict | None:
    """`outputs=` of Property.loss/value: network outputs the caller already computed, as
    {"x0": model(x0)} (a property with one network) or {"f(x0)": f(x0)}, so the term f(x0) does
    not run the network again (a training step's cross-entropy computes model(x) anyway).

    Used only where that is exact: for a network known to compute the same in train and eval
    mode, deterministically (quantifiers.mode_independent: the search runs it in eval mode,
    the loss in the caller's), and for an argument bound as the very tensor passed (not a
    converted copy). Anywhere else they are ignored and the network runs as without them.
    The caller vouches that each output is the network's on that argument as it is now."""
    if outputs is None:
        return None
    from .quantifiers import mode_independent
    if not isinstance(outputs, dict):
        raise ArgumentTypeError(f"outputs= takes a dict such as {{'x0': model(x0)}}, not "
                                f"{type(outputs).__name__}")
    real = [n for n, t in prop.args if t.kind == "real"]
    known = {}
    for key, out in outputs.items():
        m = _OUTPUT_KEY.fullmatch(str(key))
        if m:
            net, arg = m.groups()
        elif len(prop.networks) == 1:
            net, arg = next(iter(prop.networks)), str(key).strip()
        else:
            raise ArgumentTypeError(f"outputs= key {key!r}: the spec declares networks "
                                    f"{sorted(prop.networks)}, so name one: 'net(arg)'")
        if net not in prop.networks:
            raise ArgumentTypeError(f"outputs= key {key!r} names the network '{net}', which the "
                                    f"spec does not declare (networks: {', '.join(prop.networks)})")
        if arg not in real:
            raise ArgumentTypeError(f"outputs= key {key!r} names '{arg}', which is not a tensor "
                                    f"argument of '{prop.name}' (its tensor arguments: "
                                    f"{', '.join(real) or 'none'})")
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim == 0 \
                or out.shape[0] != ctx.batch:
            raise InputError(f"outputs= {key!r} must be the network's output on '{arg}': a float "
                             f"tensor with the batch first ({ctx.batch} examples), got "
                             + (f"shape {list(out.shape)}" if isinstance(out, torch.Tensor)
                                else type(out).__name__))
        if ctx.vals[arg] is args[arg] and mode_independent(ctx.nets[net]):
            known[(net, arg)] = out
    return known or None


def param_value(prop, name: str, val, dtype, device) -> torch.Tensor:
    """A parameter's value (0-dim, or 1-D: one per example), checked like compile-time values:
    finite, whole for Int/Nat, >= 0 for Nat and for a parameter used as a ball's radius.
    A plain number is checked in Python (no device round trip)."""
    ty = prop.param_types[name]
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        try:
            t = torch.as_tensor(val)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None or t.dtype == torch.bool or t.is_complex():
            raise ArgumentTypeError(f"parameter '{name}' takes a number or one number per "
                                    f"example, not {val!r}")
        if t.ndim > 1:
            raise ArgumentTypeError(f"parameter '{name}' takes a number or one number per "
                                    f"example, got a tensor of shape {list(t.shape)}")
        finite, negative = bool(torch.isfinite(t).all()), bool((t < 0).any())
        whole = not t.is_floating_point() or bool((t == t.round()).all())
    else:
        finite = math.isfinite(val)
        negative, whole = val < 0, (not finite) or float(val).is_integer()
        t = None
    if not finite:
        raise InputError(f"parameter '{name}' must be a finite number, got {val!r}")
    if negative and name in prop.radius_params:
        raise InputError(f"parameter '{name}' is the radius of a ball and must be >= 0, got "
                         f"{val!r} (a negative radius leaves nothing to search: the property "
                         "would hold vacuously)")
    if ty.kind == "int":
        if not whole:
            raise ArgumentTypeError(f"parameter '{name}' is {ty} but {val!r} is not a whole number")
        if negative and str(ty) == "Nat":
            raise InputError(f"parameter '{name}' is Nat but {val!r} is negative")
    t = torch.as_tensor(val, device=device) if t is None else t.to(device)
    return t.long() if ty.kind == "int" else t.to(dtype)


def per_example(v: torch.Tensor, batch: int) -> torch.Tensor:
    """One value per example: formulas that ignore the batch are broadcast over it."""
    if v.ndim == 0:
        return v.expand(batch)
    v = v.reshape(v.shape[0], -1)[:, 0] if v.ndim > 1 else v
    return v.expand(batch) if v.shape[0] == 1 != batch else v


__all__ = ["bind", "known_outputs", "param_value", "points_of", "split_search", "per_example",
           "ArgumentTypeError"]
