"""Data-parallel constraint training on one machine: throughput with 1 and 2 processes
(DistributedDataParallel over gloo on 127.0.0.1, 1 thread each) against one process with 2
threads, and the scaling efficiency.

Each configuration trains the SR constraint regime (the paper's PaperMLP(784), Adam, batch 128,
PGD --steps signed steps of 0.01, DL2) on the same N images (the first N Fashion-MNIST training
images where present, else uniform noise) in fresh processes started the way torchrun starts
them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment), for one warm-up epoch and
--epochs timed ones; the rate is the global examples per second of the timed epochs as the
trainer measures them (rank 0's clock). Rounds alternate the configurations so that drift and
other load hit each alike; the table gives every round's rate and the median.

    scaling efficiency = rate(2 processes x 1 thread) / (2 x rate(1 process x 1 thread))
    vs 2 threads       = rate(2 processes x 1 thread) / rate(1 process x 2 threads)

On a machine shared with other work the wall-clock rates depend on the share each process
gets (a DDP step waits for its slowest rank), so it also reports the CPU seconds all processes
of a configuration spent per 1000 examples (time.process_time over the timed epochs): the
work, contention aside. It also prints the largest weight difference between the runs (all start from the same weights
and see the same global batches: they differ by float rounding only).

    .venv/bin/python bench/bench_ddp.py [--n 8192] [--steps 50] [--epochs 2] [--rounds 2] [--json F]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/work/shared/data/fashion-mnist")
CONFIGS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
           ("2 processes x 1 thread (DDP, gloo)", 2, 1)]


def load_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    images, labels = FMNIST / "train-images-idx3-ubyte.gz", FMNIST / "train-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        with gzip.open(images, "rb") as f:
            raw = f.read(16 + n * 784)
        with gzip.open(labels, "rb") as f:
            lab = f.read(8 + n)
        x = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).copy()).float() / 255
        y = torch.from_numpy(np.frombuffer(lab[8:], dtype=np.uint8).copy()).long()
        if len(y) == n:
            return x.reshape(n, 1, 28, 28), y, f"first {n} Fashion-MNIST training images"
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
            f"{n} uniform-noise images")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, threads: int, port: int, opts: dict, out: str) -> None:
    """One process of one configuration (the body torchrun would run)."""
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(threads)
    from robustspec.compiler import compile_spec
    from robustspec.runtime import distributed
    from robustspec.runtime.models import PaperMLP
    from robustspec.runtime.training import TrainConfig, Trainer

    ranks = distributed.start(torch.device("cpu")) if world > 1 else distributed.SINGLE
    try:
        x, y, _ = load_images(opts["n"])
        prop = compile_spec(ROOT / "specs" / "standard_robustness.spec")["sr"]
        torch.manual_seed(0)
        model = PaperMLP(784)
        cfg = TrainConfig(regime="constraint", epochs=1 + opts["epochs"], batch_size=128, lr=1e-3,
                          search_steps=opts["steps"], step_size=0.01, seed=0)
        trainer = Trainer(model, cfg, prop, progress=False, ranks=ranks)
        cpu = []  # this process's CPU seconds at the end of each epoch
        history = trainer.fit(x, y, on_epoch=lambda s: cpu.append(time.process_time()))
        Path(f"{out}.cpu{rank}").write_text(str(cpu[-1] - cpu[0]))  # the timed epochs
        if ranks.is_main:
            torch.save({"history": history, "weights": model.state_dict()}, out)
    finally:
        distributed.stop()


def run_config(world: int, threads: int, opts: dict, out: Path) -> dict:
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(world, threads, _free_port(), opts, str(out)),
                       nprocs=world, start_method="spawn")
    got = torch.load(out, weights_only=True)
    rates = [h["examples_per_s"] for h in got["history"][1:]]  # epoch 1 is the warm-up
    examples = sum(h["examples_per_s"] * h["seconds"] for h in got["history"][1:])
    cpu = sum(float(Path(f"{out}.cpu{r}").read_text()) for r in range(world))
    return {"rate": statistics.fmean(rates), "cpu_per_1k": 1000 * cpu / examples,
            "epochs": got["history"], "weights": got["weights"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8192, help="training images (default 8192)")
    ap.add_argument("--steps", type=int, default=50, help="PGD steps per batch (default 50)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    opts = {"n": args.n, "steps": args.steps, "epochs": args.epochs}
    _, _, what = load_images(args.n)
    print(f"SR constraint training, PaperMLP(784), batch 128, {args.steps} PGD steps, {what}; "
          f"{args.epochs} timed epoch(s) after 1 warm-up, {args.rounds} round(s); torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    rates = {name: [] for name, _, _ in CONFIGS}
    cpus = {name: [] for name, _, _ in CONFIGS}
    weights = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = CONFIGS if r % 2 == 0 else CONFIGS[::-1]
            for name, world, threads in order:
                got = run_config(world, threads, opts, Path(tmp) / f"r{r}-{world}-{threads}.pt")
                rates[name].append(got["rate"])
                cpus[name].append(got["cpu_per_1k"])
                weights[name] = got["weights"]
                print(f"  round {r + 1}: {name}: {got['rate']:.0f} examples/s, "
                      f"{got['cpu_per_1k']:.2f} CPU s per 1000 examples", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    one, two_threads, ddp = (med[c[0]] for c in CONFIGS)
    ref = weights[CONFIGS[0][0]]
    diffs = {name: max((w[k] - ref[k]).abs().max().item() for k in ref)
             for name, w in weights.items() if name != CONFIGS[0][0]}
    print()
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    print("| configuration | examples/s (median) | rounds | CPU s per 1000 examples (all "
          "processes; median) |")
    print("|---|---:|---|---:|")
    for name, _, _ in CONFIGS:
        print(f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in rates[name])} | "
              f"{cpu_med[name]:.2f} |")
    print()
    print(f"scaling efficiency of 2 processes: {ddp / (2 * one):.2f} (speed-up {ddp / one:.2f}x "
          f"over 1 process x 1 thread); against 1 process x 2 threads: {ddp / two_threads:.2f}x")
    work = cpu_med[CONFIGS[0][0]] / cpu_med[CONFIGS[2][0]]
    print(f"CPU-time efficiency of 2 processes (CPU s per example, 1 process / 2 processes): "
          f"{work:.2f}")
    for name, d in diffs.items():
        print(f"largest weight difference to 1 process x 1 thread: {name}: {d:.2e}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "median": med, "cpu_per_1k": cpus,
                                         "efficiency": ddp / (2 * one), "cpu_efficiency": work,
                                         "vs_two_threads": ddp / two_threads,
                                         "weight_difference": diffs, "options": opts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
