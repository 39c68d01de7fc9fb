"""The paper's metrics for any compiled property, batched over the data and swept over eps.

    clean accuracy          argmax f(x0) == y
    constraint security     fraction of inputs where a PGD attack finds no violation (and the
                            property held with its premise true)
    constraint accuracy     fraction of inputs where n uniform samples find no violation (idem)
    vacuous                 inputs where the property held only because a premise was false at
                            the PGD point: counted here, not inside the security

    constraint satisfaction fraction of the first `verify_limit` inputs a verifier proves
                            (runtime/verify.py: attack, bounds, a complete solver), with the
                            invariants checked: a proved input is one the PGD attack did not
                            break, so satisfaction <= security on those inputs
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from robustspec.compiler import Property, RandomSampling
from robustspec.dsl.errors import InputError

from . import arguments, distributed
from .files import atomic_write_text
from .training import property_args


@dataclass
class EvalRow:
    eps: float
    n: int
    clean_accuracy: float
    constraint_security: float
    constraint_accuracy: float | None
    vacuous: int
    seconds: float
    constraint_satisfaction: float | None = None  # over the first `verified_n` inputs
    verified_n: int = 0
    security_on_verified: float | None = None  # security over the same inputs, for comparison


@dataclass
class EvalResult:
    """Per-eps metrics of one model against one property; `.table()` for people."""

    property: str
    rows: list[EvalRow] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def table(self) -> str:
        verified = any(r.verified_n for r in self.rows)
        head = f"{'eps':>6}  {'clean acc':>9}  {'security':>9}  {'accuracy':>9}  {'vacuous':>7}  {'n':>6}  {'time':>7}"
        if verified:
            head += f"  {'satisfied':>9}  {'(security)':>10}  {'of':>5}"
        lines = [f"property {self.property}", head, "-" * len(head)]
        for r in self.rows:
            ca = f"{r.constraint_accuracy:9.4f}" if r.constraint_accuracy is not None else f"{'-':>9}"
            line = (f"{r.eps:6.3f}  {r.clean_accuracy:9.4f}  {r.constraint_security:9.4f}  {ca}  "
                    f"{r.vacuous:7d}  {r.n:6d}  {r.seconds:6.1f}s")
            if verified:
                line += (f"  {r.constraint_satisfaction:9.4f}  {r.security_on_verified:10.4f}  "
                         f"{r.verified_n:5d}")
            lines.append(line)
        if verified:
            lines.append("satisfied: proved by the verifier on the first inputs ('of'); "
                         "(security): the attack's security on the same inputs")
        return "\n".join(lines)

    __str__ = table

    def _row_dicts(self) -> list[dict]:
        """Rows as dicts; the satisfaction columns only when a verifier ran."""
        verified = any(r.verified_n for r in self.rows)
        drop = () if verified else ("constraint_satisfaction", "verified_n", "security_on_verified")
        return [{k: v for k, v in asdict(r).items() if k not in drop} for r in self.rows]

    def to_dict(self) -> dict:
        return {"property": self.property, "settings": self.settings, "rows": self._row_dicts()}

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write STEM.json and STEM.csv; returns both paths."""
        stem = Path(stem)
        if stem.suffix in (".json", ".csv"):
            stem = stem.with_suffix("")
        # append, not with_suffix: "scr-eta0.9" must not become "scr-eta0.json"
        j, c = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".csv")
        atomic_write_text(j, json.dumps(self.to_dict(), indent=1))
        table = io.StringIO(newline="")
        rows = self._row_dicts()
        w = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["eps"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
        atomic_write_text(c, table.getvalue())
        return j, c


class RowChunks(torch.nn.Module):
    """The model run on at most `rows` rows at a time, its outputs joined (autograd splits
    the backward the same way). The same numbers up to float rounding, at another speed: on
    the CPU, E4's CNN costs 1.64x as much per image for an input gradient (1.21x for a forward
    pass) on the evaluation's chunks of 1000 rows as on 64-250 (bench/eval_batch_size.py). The
    chunks are what the random starts and samples are laid out by, so they stay; only the
    network's passes are split."""

    def __init__(self, model, rows: int):
        super().__init__()
        self.model, self.rows = model, rows
        self.training = False  # the wrapper's own flag: the model's mode is the caller's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.rows:
            return self.model(x)
        return torch.cat([self.model(part) for part in x.split(self.rows)])


def evaluate(model: torch.nn.Module, prop: Property, x: torch.Tensor, y: torch.Tensor,
             eps=(0.1,), *, eps_param: str = "eps", steps: int = 50, step_size: float | None = None,
             restarts: int = 1, samples: int = 100, batch_size: int = 1000, logic: str = "dl2",
             seed: int = 0, params: dict | None = None, progress: bool | None = None,
             device: str | torch.device | None = None,
             ranks: distributed.Ranks | None = None, verify_limit: int = 0,
             verifier: str = "auto", verify_timeout: float = 30.0,
             forward_rows: int | None = None) -> EvalResult:
    """Clean accuracy, constraint security (PGD) and constraint accuracy (sampling) per eps.

    samples=0 skips constraint accuracy. Everything is batched; examples are processed in
    chunks of batch_size. device: where to run (None: where the model is). ranks: each chunk
    is shared out over the data-parallel ranks (distributed.start()) and the counts summed;
    the random starts depend on the example's place only, so the counts are one process's.
    verify_limit > 0 adds constraint satisfaction on the first verify_limit inputs (the
    verifier `verifier`, `verify_timeout` seconds per input; needs the `verify` extra for the
    complete solvers), checked against this evaluation's own attack. forward_rows: the network
    runs on at most this many rows at a time (RowChunks: the same numbers up to rounding; a
    convolutional network on the CPU is faster at a few hundred rows than at batch_size);
    None runs each chunk in one pass.
    """
    from tqdm.auto import tqdm

    if eps_param not in prop.params:
        raise InputError(f"property '{prop.name}' has no parameter '{eps_param}' to sweep "
                         f"(its parameters: {', '.join(prop.params) or 'none'})")
    try:
        eps = arguments.radii(eps, eps_param)
    except InputError as e:
        raise InputError(f"eps must be one or more finite numbers >= 0, got {eps!r} ({e})") from None
    arguments.batch(x, y, "evaluate")
    arguments.finite_inputs(x, "evaluate")
    params = arguments.params(params)
    batch_size = arguments.count(batch_size, "batch_size", 1)
    samples = arguments.count(samples, "samples", 0)
    verify_limit = min(arguments.count(verify_limit, "verify_limit", 0), len(x))
    if forward_rows is not None:
        forward_rows = arguments.count(forward_rows, "forward_rows", 1)
    pgd = arguments.pgd(steps, step_size, restarts)
    ranks = ranks if ranks is not None else distributed.SINGLE
    dev = distributed.place(model, device, ranks)
    x, y = x.to(dev), y.to(dev)  # once
    arguments.model_fits(model, x, y, "evaluate")
    with torch.no_grad():
        for e in eps:
            arguments.domains_not_empty(prop, model, x, y, {**params, eps_param: e}, "evaluate")
    # the network the attacks and samples run (the verifier takes the model itself)
    net = RowChunks(model, forward_rows) if forward_rows is not None and \
        forward_rows < min(batch_size, len(x)) else model
    gen = torch.Generator().manual_seed(seed)
    sampler = RandomSampling(samples=samples) if samples > 0 else None
    result = EvalResult(prop.name, settings={"steps": steps, "step_size": step_size,
                                             "restarts": restarts, "samples": samples,
                                             "logic": logic, "seed": seed, "n": len(x),
                                             "swept": eps_param, "spec": prop.spec_name,
                                             "params": {k: v for k, v in
                                                        {**prop.params, **(params or {})}.items()
                                                        if k != eps_param}})
    if net is not model:  # the same numbers up to rounding; recorded where it was used
        result.settings["forward_rows"] = forward_rows
    with arguments.evaluating(model):
        chunks = range(0, len(x), batch_size)
        # this rank's rows of each chunk (every row of it in one process)
        shards = [distributed.batch_shard(len(x[i:i + batch_size]), ranks) for i in chunks]
        parts = [slice(i + s.start, i + s.stop) for i, s in zip(chunks, shards)]
        with torch.no_grad():
            right = sum(int((net(x[r]).argmax(-1) == y[r])[:s.real].sum())
                        for r, s in zip(parts, shards))
        right = int(distributed.all_sum(torch.tensor([right]), ranks))
        clean = (torch.tensor(float(right)) / len(x)).item()  # float32, as a mean of 0/1 was
        bar = tqdm(total=len(eps) * len(chunks), desc=f"evaluate {prop.name}", unit="chunk",
                   leave=False, disable=True if not ranks.is_main else
                   None if progress is None else not progress)
        for e in eps:
            start = time.perf_counter()
            sec, acc, vac = 0, 0, 0
            secure_rows: list[torch.Tensor] = []  # per input, for the verifier's comparison
            p = {**(params or {}), eps_param: e}
            for rows, shard in zip(parts, shards):
                real = shard.real
                args = property_args(prop, x[rows], y[rows])
                found = prop.search(net, search=distributed.shard_search(pgd, shard, ranks),
                                    logic=logic, params=p, generator=gen, **args)
                verdict = prop.check(net, at=found, params=p, **args)
                secure = verdict.holds & ~verdict.vacuous
                sec += int(secure[:real].sum())
                if verify_limit and not ranks.distributed:  # per input: (secure, attacked)
                    secure_rows.append(torch.stack([secure[:real], verdict.violated[:real]], 1).cpu())
                vac += int(verdict.vacuous[:real].sum())
                if sampler is not None:
                    sampled = prop.search(net, search=distributed.shard_search(sampler, shard,
                                                                                ranks),
                                          logic=logic, params=p, generator=gen, **args)
                    v = prop.check(net, at=sampled, params=p, **args)
                    acc += int((v.holds & ~v.vacuous)[:real].sum())
                bar.update()
            sec, acc, vac = distributed.all_sum(torch.tensor([sec, acc, vac]), ranks).tolist()
            n = len(x)
            row = EvalRow(e, n, clean, sec / n, acc / n if sampler else None, vac,
                          time.perf_counter() - start)
            if verify_limit and ranks.is_main:
                _satisfaction(row, model, prop, x[:verify_limit], y[:verify_limit], p, eps_param,
                              torch.cat(secure_rows)[:verify_limit] if secure_rows else None,
                              verifier, verify_timeout, seed)
            result.rows.append(row)
        bar.close()
    return result


def _satisfaction(row: EvalRow, model, prop: Property, x, y, params: dict, eps_param: str,
                  secure: torch.Tensor | None, verifier: str, timeout: float, seed: int) -> None:
    """Constraint satisfaction of `row` on x, checked against the evaluation's own attack."""
    from .verify import InvariantError, verify

    r = verify(model, prop, x, y, verifier=verifier, timeout=timeout, progress=False,
               params=params, seed=seed)  # params holds the swept value under its own name
    proved = torch.tensor([v == "verified" for v in r.verdicts])
    row.verified_n = len(proved)
    row.constraint_satisfaction = float(proved.float().mean())
    if secure is not None:  # one process: this evaluation's per-input outcome is at hand
        secure, attacked = secure[:, 0], secure[:, 1]
        row.security_on_verified = float(secure.float().mean())
        if bool((proved & attacked).any()):  # vacuous inputs are not attacked ones
            raise InvariantError(f"eps {row.eps:g}: the verifier proved inputs "
                                 f"{torch.nonzero(proved & attacked).flatten().tolist()} that the "
                                 "attack broke (a verifier or attack bug: please report it)")
    else:
        row.security_on_verified = r.security_upper
