"""Two versions of a piece of the client, side by side in one process: what a change to the request
path saves, below the run-to-run noise of ``overhead.py``.

Run: ``python benchmarks/side_by_side.py --framework litestar --against 989f8ba --swap
asgi:ASGIMiddleware.__call__`` times the framework's ``bare``, ``floor``, ``tallyhub`` and stock
OpenTelemetry apps of ``overhead.py``, with its drivers, plus ``tallyhub@989f8ba``: the same tallyhub app
with the swapped pieces taken from that revision. A piece is ``module:attribute.path`` of
``instrumentation/`` (``asgi:ASGIMiddleware.__call__``), or ``module:path=module:path`` to put one
module's piece in another's place (``client:describe_exception=server_errors:describe_exception``: the
client calls the function it imported). The old pieces run in a copy of their module as it was at that
revision (its own globals); the swap happens before each of their blocks and is undone after.

Both versions run the same app in the same process, so neither the hash layout of a process nor a
slow phase of the machine falls on one of them only: each round runs a block of every variant in a
shuffled order, and the difference is reported as the median of the per-round differences (paired) and
as the difference of the medians.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
import statistics
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

import overhead
from machine import REPO, machine, require_clean_tree, source_digest

VARIANTS = ("bare", "floor", "tallyhub", "otel-instrumentation")


def old_module(revision: str, name: str, cache: dict[str, types.ModuleType]) -> types.ModuleType:
    """``instrumentation/<name>.py`` as it was at ``revision``, run as a module of its own."""
    if name not in cache:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{revision}:instrumentation/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        module = types.ModuleType(f"tallyhub.instrumentation.{name}@{revision}")
        exec(compile(source, f"{name}.py@{revision}", "exec"), module.__dict__)
        cache[name] = module
    return cache[name]


def resolve(module: Any, path: str) -> tuple[Any, str]:
    """The object holding the last attribute of ``path`` (``A.b.c``), and that attribute's name."""
    *parents, last = path.split(".")
    owner = module
    for part in parents:
        owner = getattr(owner, part)
    if not hasattr(owner, last):
        raise AttributeError(f"{module.__name__} has no {path}")
    return owner, last


def swapper(revision: str, pieces: list[str]) -> tuple[Callable[[], None], Callable[[], None]]:
    """``enter`` puts the old pieces in place, ``leave`` puts the current ones back."""
    cache: dict[str, types.ModuleType] = {}
    swaps = []
    for piece in pieces:
        target, _, source = piece.partition("=")
        source = source or target
        target_module, target_path = target.split(":")
        source_module, source_path = source.split(":")
        owner, name = resolve(importlib.import_module(f"tallyhub.instrumentation.{target_module}"), target_path)
        old_owner, old_name = resolve(old_module(revision, source_module, cache), source_path)
        swaps.append((owner, name, owner.__dict__[name], getattr(old_owner, old_name)))

    def enter() -> None:
        for owner, name, _current, old in swaps:
            setattr(owner, name, old)

    def leave() -> None:
        for owner, name, current, _old in swaps:
            setattr(owner, name, current)

    return enter, leave


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", required=True, choices=list(overhead.FRAMEWORKS))
    parser.add_argument("--against", required=True, metavar="REVISION", help="the git revision of the old pieces")
    parser.add_argument("--swap", required=True, nargs="+", metavar="PIECE", help="module:attribute.path[=module:path]")
    parser.add_argument("--rounds", type=int, default=600, help="rounds (a block of every variant each; default 600)")
    parser.add_argument("--block", type=int, default=40, help="requests per variant per round (default 40)")
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up requests per variant (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the variant order shuffle")
    parser.add_argument("--allow-dirty", action="store_true", help="run on uncommitted client code (marked DIRTY)")
    args = parser.parse_args(argv)
    commit = require_clean_tree(args.allow_dirty)
    logging.disable(logging.CRITICAL)
    enter, leave = swapper(args.against, args.swap)

    bench = overhead.FRAMEWORKS[args.framework].build()
    bench.variants = [v for v in bench.variants if v.name in VARIANTS]
    current = next(v for v in bench.variants if v.name == "tallyhub")
    old = overhead.Variant(f"tallyhub@{args.against}", "the old pieces", current.app, current.recorded)
    bench.variants.append(old)
    driver = overhead.AsgiDriver(bench) if bench.interface == "asgi" else overhead.WsgiDriver(bench)
    kinds = [k.name for k in bench.kinds]
    block = max(len(kinds), args.block - args.block % len(kinds))

    def run(variant: overhead.Variant, count: int) -> dict[str, list[float]]:
        if variant is old:
            enter()
        try:
            return driver.run_block(variant, count)
        finally:
            if variant is old:
                leave()

    print(f"Machine: {machine()}")
    print(f"tallyhub instrumentation sources: sha256 {source_digest()}, commit {commit}; against {args.against}")
    print(f"command: python benchmarks/side_by_side.py {' '.join(argv or sys.argv[1:])}")
    rounds: dict[str, dict[str, list[float]]] = {v.name: {k: [] for k in kinds} for v in bench.variants}
    samples: dict[str, dict[str, list[float]]] = {v.name: {k: [] for k in kinds} for v in bench.variants}
    try:
        driver.start()
        for _ in range(max(1, args.warmup // 200)):
            for v in bench.variants:
                run(v, 200)
        order = list(bench.variants)
        rng = random.Random(args.seed)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for v in order:
                for kind, values in run(v, block).items():
                    samples[v.name][kind] += values
                    rounds[v.name][kind].append(statistics.median(values))
    finally:
        driver.close()
        for v in bench.variants[: len(VARIANTS)]:
            v.cleanup()

    def paired(a: str, b: str, kind: str) -> float:
        return statistics.median(x - y for x, y in zip(rounds[a][kind], rounds[b][kind], strict=True))

    def unpaired(a: str, b: str, kind: str) -> float:
        return statistics.median(samples[a][kind]) - statistics.median(samples[b][kind])

    print()
    print(f"## {args.framework}: {args.rounds} rounds x {block} requests per variant, µs")
    print()
    print("| variant | " + " | ".join(kinds) + " | mix | mix, difference of medians |")
    print("|---|" + "---:|" * (len(kinds) + 2))
    rows = [(v.name, "bare") for v in bench.variants[1:]] + [(old.name, "tallyhub")]
    for name, base in rows:
        cells = [paired(name, base, k) for k in kinds]
        mix = statistics.fmean(cells)
        plain = statistics.fmean(unpaired(name, base, k) for k in kinds)
        label = f"{name} - {base}"
        print(f"| {label} | " + " | ".join(f"{c:+.2f}" for c in cells) + f" | **{mix:+.2f}** | {plain:+.2f} |")
    print()
    print("each cell: the median over the rounds of (the variant's median - the other's median) in that round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
