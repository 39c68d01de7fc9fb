"""The PGD attack against torchattacks' at equal strength, measured by success (issue 10).

bench_training_speed.py compares the two at equal settings (radius, 50 steps, step size, one
uniform start), where robustspec's attack is the slightly stronger one: it keeps each input's
best point, torchattacks its last. Here strength is the share of inputs misclassified after
the attack, on 2048 inputs, for both at 2 to 200 steps (the step eps / 10, no early stop) and
three radii; then the time per batch of 128 of each, interleaved, one thread; then the issue's
"throughput at equal strength": for each strength level torchattacks reaches, each tool's
fastest setting that reaches it at every radius, and the ratio of their times. Times are
taken twice: one call (one batch) of each setting in turn, so every call starts cold after
another setting's, and as throughput, each timed call attacking all the inputs batch by batch
as an evaluation does. The inputs and model are bench_training_speed's synthetic ones (the
paper's MLP fitted to a random linear teacher), so this runs anywhere.

    .venv/bin/python bench/attack_equal_strength.py [--json out.json] [--report saved.json]
        [--keep last]

--keep last times robustspec's PGD(keep="last"), which returns the last iterate as torchattacks
does (no pass after the last step); its verdicts then take one more forward pass, timed apart.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_training_speed as bts  # noqa: E402

from robustspec.compiler import PGD, compile_spec  # noqa: E402

RADII = (0.002, 0.005, 0.01)
# every step count to 20, where the two tools' short runs are matched, then coarser
STEPS = tuple(range(2, 21)) + (25, 30, 40, 50, 100, 200)
# the settings timed by throughput (every batch in one call): where robustspec's matches of
# torchattacks' 2 to 50 steps lie
THROUGHPUT_STEPS = tuple(range(2, 13)) + (15, 20, 50)


def steps_of(times, tool: str | None = None) -> list[int]:
    """The step counts a run measured, of one tool or of either (a saved run may predate
    STEPS, or have measured the tools at different counts)."""
    return sorted({int(k.rsplit("_", 1)[1]) for k in times
                   if tool is None or k.startswith(f"{tool}_")})


def fastest_as_strong(rows, times, tool, target):
    """`tool`'s fastest step count that breaks at least as many inputs as `target` at every
    radius (None if none does)."""
    strong = [f"{tool}_{s}" for s in steps_of(times, tool)
              if all(r[f"{tool}_{s}"] >= r[target] for r in rows)]
    return min(strong, key=lambda k: times[k]["wall_ms"], default=None)


def equal_strength(rows, times):
    """Throughput at equal strength: for each strength level torchattacks reaches (its
    setting's share of inputs broken at every radius), the fastest setting of each tool that
    reaches it, and torchattacks' time over robustspec's: the attack alone, and (where the run
    timed it) the attack with each input's verdict, which robustspec's search returns (the
    objective at the point it keeps) and torchattacks' user gets by one more forward pass."""
    out = []
    for s in steps_of(times, "torchattacks"):
        level = f"torchattacks_{s}"
        theirs = fastest_as_strong(rows, times, "torchattacks", level)
        ours = fastest_as_strong(rows, times, "robustspec", level)
        row = {"level": level, "torchattacks": theirs, "robustspec": ours,
               "ratio": None if ours is None else times[theirs]["wall_ms"] / times[ours]["wall_ms"],
               "ratio_cpu": None if ours is None else times[theirs]["cpu_ms"] / times[ours]["cpu_ms"]}
        verdict = f"verdict_{theirs}"
        if ours is not None and verdict in times:
            # robustspec's verdicts come with its points (keep="best": the objective at the
            # kept point), or from one more forward pass, timed apart (keep="last")
            mine = times.get(f"verdict_{ours}", times[ours])
            row["ratio_with_verdict"] = times[verdict]["wall_ms"] / mine["wall_ms"]
        out.append(row)
    return out


def report(res) -> None:
    rows, times = res["rows"], res["times"]
    matched = equal_strength(rows, times)
    print(f"clean accuracy {res['clean_accuracy']:.3f} on {res['n']} inputs; misclassified "
          f"after the attack (step eps / 10, one uniform start, no early stop), and ms per batch "
          f"of 128 (wall / thread CPU, interleaved, one thread):")
    print("| steps | " + " | ".join(f"robustspec, eps {r['eps']}" for r in rows) + " | ms | "
          + " | ".join(f"torchattacks, eps {r['eps']}" for r in rows) + " | ms |")
    print("|---:|" + "---:|" * (2 * len(rows) + 2))
    for s in steps_of(times):
        cells = []
        for tool in ("robustspec", "torchattacks"):
            k = f"{tool}_{s}"
            if k not in times:  # not measured at this count
                cells += ["-"] * (len(rows) + 1)
                continue
            cells += [f"{100 * r[k]:.1f}%" for r in rows]
            cells.append(f"{times[k]['wall_ms']:.1f} / {times[k]['cpu_ms']:.1f}")
        print(f"| {s} | " + " | ".join(cells) + " |")
    print("\nAt equal strength: each tool's fastest setting that breaks at least as many inputs at "
          "every radius as the torchattacks setting named:")
    print("| strength of | torchattacks' fastest | robustspec's fastest | throughput ratio (wall) "
          "| (CPU) | with the verdicts (wall) |\n|---|---|---|---:|---:|---:|")
    for r in matched:
        if r["robustspec"] is None:
            print(f"| {r['level']} | {r['torchattacks']} | none as strong | - | - | - |")
        else:
            v = r.get("ratio_with_verdict")
            print(f"| {r['level']} | {r['torchattacks']} | {r['robustspec']} | {r['ratio']:.2f}x "
                  f"| {r['ratio_cpu']:.2f}x | {'-' if v is None else f'{v:.2f}x'} |")


def report_throughput(res) -> None:
    if "throughput" not in res:
        return
    tp = res["throughput"]
    print("\nThroughput (each timed call attacks all the inputs batch by batch, as an evaluation "
          "does; ms per batch of 128, wall, median; eps 0.1):")
    last = res.get("keep") == "last"
    print(f"| steps | robustspec ({'the last iterate' if last else 'with verdicts'}) | "
          + ("robustspec with verdicts | " if last else "")
          + "torchattacks | torchattacks with verdicts |\n|---:|---:|---:|---:|"
          + ("---:|" if last else ""))

    def cell(k):
        t = tp[k]
        return f"{t['wall_ms']:.2f} [{t['wall_ms_iqr'][0]:.2f}, {t['wall_ms_iqr'][1]:.2f}]"
    for s in steps_of(tp, "robustspec"):
        print(f"| {s} | {cell(f'robustspec_{s}')} | "
              + (f"{cell(f'verdict_robustspec_{s}')} | " if last else "")
              + f"{cell(f'torchattacks_{s}')} | {cell(f'verdict_torchattacks_{s}')} |")
    print("(median [quartiles] over the repetitions)")
    print("\nAt equal strength, by throughput:")
    print("| strength of | torchattacks' fastest | robustspec's fastest | ratio, attack alone "
          "| (CPU) | with the verdicts |\n|---|---|---|---:|---:|---:|")
    for r in res["equal_strength_throughput"]:
        if r["robustspec"] is None:
            print(f"| {r['level']} | {r['torchattacks']} | none as strong | - | - | - |")
            continue
        v = r.get("ratio_with_verdict")
        print(f"| {r['level']} | {r['torchattacks']} | {r['robustspec']} | {r['ratio']:.2f}x "
              f"| {r['ratio_cpu']:.2f}x | {'-' if v is None else f'{v:.2f}x'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--json", default=None)
    ap.add_argument("--throughput-reps", type=int, default=5)
    ap.add_argument("--throughput-steps", default=None, metavar="S,S,...",
                    help="the step counts timed by throughput (default: 2-12, 15, 20, 50)")
    ap.add_argument("--keep", choices=("best", "last"), default="best",
                    help="robustspec's PGD returns each input's best point (default; its verdict "
                         "comes with it) or the last iterate, as torchattacks does (its verdict "
                         "then takes one more forward pass, timed apart)")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the tables of a saved run instead of running")
    args = ap.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        report(saved)
        report_throughput(saved)
        return
    import torchattacks

    torch.set_num_threads(1)
    x, _ = bts.data(args.n)
    m, y = bts.attack_model(x)
    cr = compile_spec(str(bts.ROOT / "specs" / "classification_robustness.spec"))["cr"]
    with torch.no_grad():
        clean = m(x).argmax(1) == y

    def broken(points):
        with torch.no_grad():
            return float(((m(points).argmax(1) != y) | ~clean).float().mean())

    def found(xb, yb, eps, gen, steps):
        return cr.search(m, x0=xb, y=yb, params={"eps": eps}, generator=gen,
                         search=PGD(steps=steps, step_size=eps / 10, early_stop=False,
                                    keep=args.keep))

    def ours(xb, yb, eps, gen, steps):
        return found(xb, yb, eps, gen, steps).points["x"]

    def theirs(xb, yb, eps, steps):
        return torchattacks.PGD(m, eps=eps, alpha=eps / 10, steps=steps, random_start=True)(xb, yb)

    def ours_with_verdict(xb, yb, eps, gen, steps):
        """The points and which inputs are broken: the objective at the kept point is <= 0
        (keep="last" evaluates no objective: one forward pass, as for torchattacks)."""
        f = found(xb, yb, eps, gen, steps)
        if args.keep == "last":
            with torch.no_grad():
                return f.points["x"], m(f.points["x"]).argmax(1) != yb
        return f.points["x"], f.objective["x"] <= 0

    def theirs_with_verdict(xb, yb, eps, steps):
        adv = theirs(xb, yb, eps, steps)
        with torch.no_grad():
            return adv, m(adv).argmax(1) != yb

    batches = [(x[i:i + bts.BATCH], y[i:i + bts.BATCH]) for i in range(0, args.n, bts.BATCH)]
    rows = []
    for eps in RADII:
        row = {"eps": eps}
        for s in STEPS:
            gen = torch.Generator().manual_seed(bts.SEED)
            row[f"robustspec_{s}"] = broken(torch.cat([ours(a, b, eps, gen, s) for a, b in batches]))
            torch.manual_seed(bts.SEED)  # torchattacks' random start draws from the global generator
            row[f"torchattacks_{s}"] = broken(torch.cat([theirs(a, b, eps, s) for a, b in batches]))
        rows.append(row)
    xb, yb = batches[0]
    gen = torch.Generator().manual_seed(bts.SEED)
    fns = {}
    last = args.keep == "last"
    for s in STEPS:
        fns[f"robustspec_{s}"] = (lambda s: lambda: ours_with_verdict(xb, yb, 0.1, gen, s))(s)
        if last:  # the attack alone, and with its verdict pass
            fns[f"robustspec_{s}"] = (lambda s: lambda: ours(xb, yb, 0.1, gen, s))(s)
            fns[f"verdict_robustspec_{s}"] = (
                lambda s: lambda: ours_with_verdict(xb, yb, 0.1, gen, s))(s)
        fns[f"torchattacks_{s}"] = (lambda s: lambda: theirs(xb, yb, 0.1, s))(s)
        fns[f"verdict_torchattacks_{s}"] = (lambda s: lambda: theirs_with_verdict(xb, yb, 0.1, s))(s)
    times = bts.interleaved(fns, 10)
    # throughput: a timed call attacks every batch of the inputs in turn, as an evaluation
    # does, so each tool runs warm (one call of each setting in turn above is a cold call);
    # reported in ms per batch of 128
    tp = {}
    for s in (tuple(int(v) for v in args.throughput_steps.split(",")) if args.throughput_steps
              else THROUGHPUT_STEPS):
        tp[f"robustspec_{s}"] = (lambda s: lambda: [ours_with_verdict(a, b, 0.1, gen, s)
                                                    for a, b in batches])(s)
        if last:
            tp[f"robustspec_{s}"] = (lambda s: lambda: [ours(a, b, 0.1, gen, s)
                                                        for a, b in batches])(s)
            tp[f"verdict_robustspec_{s}"] = (lambda s: lambda: [ours_with_verdict(a, b, 0.1, gen, s)
                                                                for a, b in batches])(s)
        tp[f"torchattacks_{s}"] = (lambda s: lambda: [theirs(a, b, 0.1, s) for a, b in batches])(s)
        tp[f"verdict_torchattacks_{s}"] = (lambda s: lambda: [theirs_with_verdict(a, b, 0.1, s)
                                                              for a, b in batches])(s)
    throughput = {k: {m: v / len(batches) if m != "wall_ms_iqr" else [q / len(batches) for q in v]
                      for m, v in t.items()}
                  for k, t in bts.interleaved(tp, args.throughput_reps, warmup=1).items()}
    res = {"n": args.n, "keep": args.keep, "clean_accuracy": float(clean.float().mean()), "rows": rows,
           "times": times, "equal_strength": equal_strength(rows, times),
           "throughput": throughput, "equal_strength_throughput": equal_strength(rows, throughput)}
    report(res)
    report_throughput(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
