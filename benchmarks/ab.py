"""A/B of two commits of durable on SQLite: W1, W1 with plain-function steps, W2 and W3, in one run.

    python benchmarks/ab.py BASE [HEAD] [--repeat 5] [--durability normal|full]

Each commit is checked out in a temporary git worktree (``.`` names this
working tree as it is, uncommitted changes included). Every measurement
runs in a fresh child process that imports durable from one worktree and
measures with this checkout's benchmarks/steps.py (which uses only the public
API both commits share), so the two differ in the engine only. Measurements
alternate between the commits and rotate over the workloads, each on a fresh
file; the table shows medians and the ratio HEAD/BASE (for W2, a rate, > 1 is
faster; for the others, µs, < 1 is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"W1": "µs/step", "W1-sync": "µs/step", "W2": "steps/s", "W3": "µs/step"}
W1_STEPS, W2_RUNS, W2_STEPS, W3_STEPS = 1000, 1000, 5, 10_000


def child(worktree: str, workload: str, durability: str, tmp: str) -> None:
    sys.path.insert(0, worktree)
    import durable  # noqa: F401  # from the worktree: steps.py's own import then finds it

    sys.path.insert(1, str(ROOT))
    from benchmarks import steps

    path = Path(tmp) / "ab.db"

    async def measure() -> float:
        if workload == "W1":
            return (await steps.bench_w1(path, durability, W1_STEPS, steps.w1)) / W1_STEPS * 1e6
        if workload == "W1-sync":
            return (await steps.bench_w1(path, durability, W1_STEPS, steps.w1_sync)) / W1_STEPS * 1e6
        if workload == "W2":
            return W2_RUNS * W2_STEPS / await steps.bench_w2(path, durability, W2_RUNS, W2_STEPS)
        await steps.make_parked(path, durability, W3_STEPS)
        return (await steps.bench_replay(path, durability, W3_STEPS)) / W3_STEPS * 1e6

    async def warm_then_measure() -> float:
        warm = Path(tmp) / "warm.db"
        await steps.bench_w1(warm, durability, 10, steps.w1)
        return await measure()

    print(json.dumps({"value": asyncio.run(warm_then_measure()), "from": durable.__file__}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?")
    parser.add_argument("head", nargs="?", default="HEAD")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"of {', '.join(WORKLOADS)} (default all)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.base is None:
        parser.error("name the BASE commit to compare with")
    workloads = args.workloads.split(",")
    if not set(workloads) <= set(WORKLOADS):
        parser.error(f"--workloads takes some of {', '.join(WORKLOADS)}")
    revs = {"base": args.base, "head": args.head}
    samples: dict[tuple[str, str], list[float]] = {(r, w): [] for r in revs for w in workloads}
    with tempfile.TemporaryDirectory(prefix="durable-ab-") as tmp:
        trees = {}
        for name, rev in revs.items():
            if rev == ".":
                trees[name] = str(ROOT)
                continue
            trees[name] = str(Path(tmp) / name)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", trees[name], rev], check=True,
                           capture_output=True)  # fmt: skip
        try:
            order = [(w, r) for w in workloads for r in revs]
            for rep in range(args.repeat):
                shift = rep % len(order)
                for workload, name in order[shift:] + order[:shift]:
                    with tempfile.TemporaryDirectory(dir=tmp) as files:
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", trees[name], workload, args.durability, files],
                            check=True, capture_output=True, text=True, cwd=files,
                        )  # fmt: skip
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    assert got["from"].startswith(trees[name]), got["from"]
                    samples[(name, workload)].append(got["value"])
                    print(f"  [{rep + 1}/{args.repeat}] {workload:<8} {name}: {got['value']:,.2f}", file=sys.stderr)
        finally:
            for tree in trees.values():
                if tree != str(ROOT):
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], capture_output=True)
    base_id, head_id = (
        "working tree" if r == "." else
        subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", r], capture_output=True, text=True).stdout.strip()
        for r in revs.values()
    )  # fmt: skip
    print(f"\nSQLite A/B, durability {args.durability}, median of {args.repeat} (fresh process and file each)")
    print(f"{'workload':<10} {'unit':<8} {'base ' + base_id:>14} {'head ' + head_id:>14} {'head/base':>10}")
    for workload in workloads:
        unit = WORKLOADS[workload]
        b = statistics.median(samples[("base", workload)])
        h = statistics.median(samples[("head", workload)])
        print(f"{workload:<10} {unit:<8} {b:>14,.2f} {h:>14,.2f} {h / b:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
