"""Devices and data parallelism on PyTorch's own engine (torch.distributed, launched by torchrun).

Why this module exists: one process on one CPU is where robustspec started; a user with GPUs or
several machines needs (a) a device option that means the same thing everywhere, and (b) data
parallel training, evaluation and attacks whose results do not depend on how many processes ran
them. The pieces:

    resolve_device("auto"|"cpu"|"cuda"|"cuda:N")   a torch.device, or a clear InputError
    place(model, device) / to_cpu(state)           move a model; CPU copies for checkpoints
    start(device) / stop()                         the process group from torchrun's environment
                                                   (gloo on the CPU, nccl on CUDA)
    Ranks                                          this process's rank and the world size
    data_parallel(model, device, ranks)            DistributedDataParallel with several ranks
    batch_shard(m, ranks)                          this rank's rows of a global batch of m rows
    all_sum / all_min / gather_rows / agree        collectives that are no-ops in one process
    from_main(fn, ranks)                           fn on rank 0, its result or error on every rank
    ShardedSearch                                  a quantifier search over a shard that draws
                                                   the random numbers of the *global* batch

Exactness across world sizes rests on two rules. Every rank draws the same epoch permutation
(the shuffle generator is seeded identically and consumed identically everywhere) and takes a
contiguous shard of each global batch. And every random start of a search is drawn for the
whole global batch on the CPU generator, then sliced to the shard's rows and moved to the
device: example i of a global batch gets the same start whichever rank holds it, on any
device. Where stopping a shard's PGD early could change a point (several restarts), the stop
is decided for the global batch, as one process deciding for the whole batch would
(ShardedSearch says why one restart needs no such decision). docs/distributed.md has the rest.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from robustspec.compiler.search import PGD, RealDomain, Search
from robustspec.dsl.errors import InputError, TrainingError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


# ------------------------------------------------------------------ devices
def resolve_device(device: str | torch.device | None = "auto", local_rank: int | None = None
                   ) -> torch.device:
    """A torch.device from 'auto' (CUDA if present, else the CPU), 'cpu', 'cuda' or 'cuda:N'.

    Under torchrun, 'auto' and 'cuda' mean cuda:LOCAL_RANK, one GPU per process. A CUDA device
    that is absent is an InputError saying what there is, never a traceback deep in torch.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = (f"this torch {torch.__version__} is built for CUDA {torch.version.cuda} but "
                     "sees no GPU" if torch.version.cuda else
                     f"this torch {torch.__version__} is a CPU-only build")
            raise InputError(f"device '{text}' was asked for, but CUDA is not available ({build}); "
                             "use --device cpu, or --device auto to take a GPU only where there "
                             "is one")
        count = torch.cuda.device_count()
        if text == "cuda":
            return torch.device("cuda", local_rank % count)
        index = text.split(":", 1)[1]
        if not index.isdigit():
            raise InputError(f"device '{text}': the GPU index must be a whole number, as in cuda:0")
        if int(index) >= count:
            raise InputError(f"device '{text}' does not exist: this machine has {count} GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", int(index))
    raise InputError(f"unknown device '{device}'; use {DEVICE_CHOICES}")


def model_device(model) -> torch.device:
    """Where a model's weights are (the CPU for a model without any, or a plain callable)."""
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def place(model, device: str | torch.device | None, ranks: "Ranks | None" = None) -> torch.device:
    """Move `model` to `device` (resolved; None: leave it where it is) and say where it is.
    A plain callable cannot be moved: it is called with inputs on `device`."""
    if device is None:
        return model_device(model)
    dev = resolve_device(device, ranks.local_rank if ranks is not None else None)
    if isinstance(model, torch.nn.Module):
        model.to(dev)
    return dev


def to_cpu(obj):
    """A copy of a (nested) state with every tensor on the CPU: checkpoints load on any device."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


# ------------------------------------------------------------------ ranks and the process group
@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank, the world size, and its rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, result files and progress output."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def launched_by_torchrun(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return "RANK" in environ and "WORLD_SIZE" in environ


def env_ranks(environ=None) -> Ranks:
    """Ranks from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return SINGLE
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise InputError(f"RANK={environ.get('RANK')!r} and WORLD_SIZE="
                         f"{environ.get('WORLD_SIZE')!r} must be whole numbers (torchrun sets "
                         "them)") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return Ranks(rank, world, local)


def start(device: torch.device, environ=None, timeout_s: float = 4 * 3600.0) -> Ranks:
    """Join the process group torchrun set up: gloo for CPU tensors, nccl for CUDA ones.

    Called without torchrun's environment it is an InputError that shows the launch line.
    timeout_s bounds each collective's wait: long, because rank 0 alone may spend a while on a
    stage the others wait for (a verifier inside evaluate); torchrun ends the other processes
    when one fails, so nothing hangs that long on an error.
    """
    import datetime

    import torch.distributed as dist

    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        raise InputError("--ddp needs the processes torchrun starts: run "
                         "`torchrun --nproc_per_node N -m robustspec.runtime.cli train --ddp ...` "
                         "(or drop --ddp for one process)")
    ranks = env_ranks(environ)
    if dist.is_initialized():
        return ranks
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=ranks.rank, world_size=ranks.world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return ranks


def stop() -> None:
    """Tear the process group down, every rank together: under gloo, a rank that destroys
    its group while another still holds its connections made the process abort at exit
    ("terminate called without an active exception", SIGABRT after the work was done) in
    about 1 run in 3 of tests/test_distributed.py's two ranks; with a barrier first, 0 in 24.
    The barrier waits at most 60 s (a rank that died must not hang the others)."""
    import datetime

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            except RuntimeError:  # another rank failed or left: tear down regardless
                pass
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collectives' tensors live (the CPU for gloo); an InputError without a group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        raise InputError("these ranks say there are several processes, but no process group "
                         "was started: call robustspec.runtime.distributed.start(device) in "
                         "each process torchrun starts, and pass the Ranks it returns")
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(t: torch.Tensor, ranks: Ranks, op) -> torch.Tensor:
    if not ranks.distributed:
        return t
    import torch.distributed as dist

    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=op)
    return buf.to(t.device)


def all_sum(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum over ranks (a new tensor on t's device); t itself in one process."""
    import torch.distributed as dist

    return _reduce(t, ranks, dist.ReduceOp.SUM if ranks.distributed else None)


def all_min(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    import torch.distributed as dist

    return _reduce(t, ranks, dist.ReduceOp.MIN if ranks.distributed else None)


def data_parallel(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """The module whose forward pass feeds the backward pass: DDP's with several ranks (its
    gradients are all-reduced, averaged over the ranks), the model itself in one process.

    Searches run on the bare model: their input gradients must not arm DDP's reducer."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    _comm_device()  # a process group must exist

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def from_main(fn, ranks: Ranks):
    """fn() on rank 0, its result (or the error it raised) sent to every rank.

    Reading a checkpoint or deciding to refuse a run happens once; every rank then goes on
    with the same checkpoint or fails with the same error, and none waits forever."""
    if not ranks.distributed:
        return fn()
    import torch.distributed as dist

    _comm_device()  # a process group must exist
    box = [None]
    if ranks.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # sent, then raised on every rank
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def agree(value: str, ranks: Ranks, what: str) -> None:
    """Refuse to go on unless every rank holds the same value (e.g. the data's digest)."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    got = [None] * ranks.world
    dist.all_gather_object(got, value)
    if len(set(got)) != 1:
        raise TrainingError(f"the ranks disagree on {what}: " + ", ".join(
            f"rank {r}: {v}" for r, v in enumerate(got)) + "; every rank must see the same "
            "data and options")


# ------------------------------------------------------------------ sharding
@dataclass(frozen=True)
class Shard:
    """This rank's rows [start, stop) of a global batch of `total` rows.

    `real` is the number of those rows that count: a rank left without rows (a last batch
    smaller than the world) still computes on one borrowed row, weight 0, so that it takes part
    in every collective and consumes the same random numbers as the others.
    """

    start: int
    stop: int
    total: int
    real: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def weight(self) -> float:
        """Scale of this shard's mean loss so that DDP's average over ranks is the global mean."""
        return self.real / self.total


def shard_range(m: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous split of m rows over world ranks (the first m % world ranks get one more)."""
    base, extra = divmod(m, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def batch_shard(m: int, ranks: Ranks) -> Shard:
    start, stop = shard_range(m, ranks.rank, ranks.world)
    if stop > start:
        return Shard(start, stop, m, stop - start)
    return Shard(0, 1, m, 0)  # no rows of its own: row 0 of the batch, weight 0


def gather_rows(t: torch.Tensor, shard: Shard, ranks: Ranks) -> torch.Tensor:
    """The global batch's rows in order, on every rank, from each rank's shard (`t`)."""
    if not ranks.distributed:
        return t
    import torch.distributed as dist

    if t.dtype == torch.bool:  # sent as bytes: not every backend gathers bools
        return gather_rows(t.to(torch.uint8), shard, ranks).bool()
    sizes = [shard_range(shard.total, r, ranks.world) for r in range(ranks.world)]
    width = max(b - a for a, b in sizes)
    dev = _comm_device()
    mine = t[: shard.real].to(dev)
    padded = torch.zeros((width,) + tuple(t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: len(mine)] = mine
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, sizes)]).to(t.device)


# ------------------------------------------------------------------ searches over a shard
def _spread(v, n: int, start: int, total: int, device: torch.device):
    """v with its batch rows (dimension 0 of size n) placed at [start, start+n) of `total` rows
    (the other rows repeat row 0: any valid domain will do, they are drawn for and dropped)."""
    if isinstance(v, torch.Size):
        return torch.Size((total,) + tuple(v[1:])) if len(v) and v[0] == n else v
    if torch.is_tensor(v):
        v = v.to(device)
        if v.ndim == 0 or v.shape[0] != n:
            return v
        out = v[:1].expand((total,) + tuple(v.shape[1:])).clone()
        out[start:start + n] = v
        return out
    if isinstance(v, tuple):
        return tuple(_spread(e, n, start, total, device) for e in v)
    if isinstance(v, torch.device):
        return device
    return v


class _ShardDomain(RealDomain):
    """A shard's domain whose samples are the shard's rows of a sample of the global batch,
    drawn with the generator on the generator's device (the CPU's: the same numbers anywhere)."""

    def __init__(self, inner: RealDomain, start: int, total: int):  # noqa: D107 (no super: a view)
        self.__dict__.update(inner.__dict__)
        self._inner, self._start, self._total = inner, start, total

    def sample(self, gen: torch.Generator | None) -> torch.Tensor:
        inner = self._inner
        n = inner.shape[0]
        here = getattr(inner, "ref_device", None)
        there = gen.device if gen is not None else here
        if self._start == 0 and self._total == n and there == here:
            return inner.sample(gen)
        glob = object.__new__(type(inner))
        glob.__dict__.update({k: _spread(v, n, self._start, self._total, there)
                              for k, v in vars(inner).items()})
        return glob.sample(gen)[self._start:self._start + n].to(here)


class _GlobalStop(Exception):
    """Every example of the global batch has a point with objective <= 0: PGD may stop."""


class ShardedSearch(Search):
    """Run `inner` on this rank's shard [start, start+n) of a global batch of `total` rows.

    Random starts come from the global batch's draw (see _ShardDomain), so the points found do
    not depend on the world size or the device. In one process with start 0 and total n this
    is `inner` itself.

    PGD's early stop: with one restart a shard may stop on its own. Its random start was drawn
    before any step, and a found example's point no longer moves (every logic's loss is >= 0
    and flat at 0, so the signed gradient there is 0): stopping sooner than the global batch
    changes no point. With several restarts it would: a shard that stops skips the next
    restart's draw (the ranks' generators would drift apart) and that restart's points. There
    the stop is decided for the global batch: the best values are tracked here as PGD tracks
    them, and one all-reduce per step tells every rank whether every example is found.
    """

    name = "sharded"

    def __init__(self, inner: Search, start: int = 0, total: int | None = None,
                 ranks: Ranks = SINGLE):
        self.inner, self.start, self.total, self.ranks = inner, start, total, ranks

    def describe(self) -> str:
        return self.inner.describe()

    def run(self, objective, domains, batch, generator=None):
        from robustspec.compiler.search import _Best

        total = self.total if self.total is not None else batch
        domains = {k: _ShardDomain(d, self.start, total) for k, d in domains.items()}
        inner = self.inner
        if not (self.ranks.distributed and isinstance(inner, PGD) and inner.early_stop
                and inner.restarts > 1):
            return inner.run(objective, domains, batch, generator)
        best = _Best()
        ranks = self.ranks
        calls = [0]
        every = getattr(inner, "CHECK_EVERY", 1)

        def watched(points):
            """PGD's objective, and PGD's stop check where PGD looks (every CHECK_EVERY steps
            and after each restart's last evaluation), with the answer of the global batch."""
            obj, tie = objective(points)
            o = obj.expand(batch) if obj.ndim == 0 else obj
            t = tie.expand(batch) if tie is not None and tie.ndim == 0 else tie
            best.update(points, o, t)
            at = calls[0] % (inner.steps + 1)  # steps gradient steps, then one evaluation
            calls[0] += 1
            if at == inner.steps or (at + 1) % every == 0:
                mine = torch.tensor([1.0 if bool((best.obj <= 0).all()) else 0.0])
                if all_min(mine, ranks).item() == 1.0:
                    raise _GlobalStop
            return obj, tie

        try:
            return dataclasses.replace(inner, early_stop=False).run(watched, domains, batch,
                                                                    generator)
        except _GlobalStop:
            return best.points, best.obj


def shard_search(search: Search, shard: Shard | None, ranks: Ranks = SINGLE) -> Search:
    """`search` for a shard (or for a whole batch: portable random starts only)."""
    if shard is None:
        return ShardedSearch(search, ranks=ranks)
    return ShardedSearch(search, shard.start, shard.total, ranks)


__all__ = ["DEVICE_CHOICES", "Ranks", "SINGLE", "Shard", "ShardedSearch", "agree", "all_min",
           "all_sum", "batch_shard", "env_ranks", "gather_rows", "launched_by_torchrun",
           "resolve_device", "shard_range", "shard_search", "start", "stop", "to_cpu"]
