"""Run every benchmark in bench/ one after the other and summarise their exit codes.

A benchmark is a ``bench/*.py`` script (other than this one) with a ``main(argv) -> int``; each
runs in its own interpreter (a crashed or wedged bench cannot take the others down) with a
wall-clock limit, and writes its report under ``bench/out/``. Arguments after ``--`` are passed
to every bench (e.g. ``-- --quick`` for a smoke run). Long benches (``LONG``: the soak, about
13 minutes) run only when asked for: ``--soak``, or by name with ``--only``.

Usage: python bench/run_all.py [--only NAME ...] [--soak] [--limit SECONDS] [-- BENCH ARGS...]
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LONG = frozenset({"soak"})  # skipped unless --soak (or named with --only)


def discover() -> list[Path]:
    """bench/*.py scripts that define a top-level ``main`` function, in name order."""
    found: list[Path] = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name in {"run_all.py", "__init__.py"} or path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            found.append(path)
    return found


def run_one(path: Path, args: Sequence[str], limit_s: float) -> tuple[int, float]:
    """Run one bench script; its exit code (or -SIGKILL after ``limit_s``) and duration."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(path), *args], cwd=REPO_ROOT, env=env)
    try:
        code = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait()
    return code, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description="Run every benchmark in bench/.")
    parser.add_argument("--only", action="append", help="bench name (file stem), repeatable")
    parser.add_argument("--limit", type=float, default=1800.0, help="seconds per bench")
    parser.add_argument(
        "--soak", action="store_true", help=f"also run the long benches ({', '.join(LONG)})"
    )
    args = parser.parse_args(argv)

    benches = discover()
    if args.only:
        benches = [b for b in benches if b.stem in set(args.only)]
    elif not args.soak:
        benches = [b for b in benches if b.stem not in LONG]
    if not benches:
        print("no benchmark selected", file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for path in benches:
        print(f"=== {path.stem} ===", flush=True)
        code, took = run_one(path, passthrough, args.limit)
        results.append((path.stem, code, took))
    print("\n=== summary ===")
    for name, code, took in results:
        print(f"{name:<20} {'ok' if code == 0 else f'exit {code}':<10} {took:7.1f} s")
    print(f"reports: {BENCH_DIR / 'out'}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
