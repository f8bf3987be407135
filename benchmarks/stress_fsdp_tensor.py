"""Repeats a short `fsdp_tensor` training run on 8 emulated CPU devices with a busy core beside it.

    python benchmarks/stress_fsdp_tensor.py                      # 20 runs of each mesh, one busy core
    python benchmarks/stress_fsdp_tensor.py --runs=5 --flags=bare   # without the emulated-mesh flags

Issue 18: `mesh.rules=fsdp_tensor` on (1, 4, 2) and (2, 2, 2) sometimes aborted (rc 134, "Termination
timeout for collective permute ... only 7 arrived") while other jobs loaded the machine. Each run
here is a fresh process training a tiny Qwen2-style checkpoint saved by transformers (biases, tied
embeddings) with the paper's memory settings (scan over layers, full remat, chunked logits) through
`score_jax.train.run`, as tests/test_mesh_fsdp_tensor.py does once per mesh. `--flags=emulated` (the
default) runs under `score_jax.distributed.emulated_cpu_env`, as the tests do; `--flags=bare` sets only
the device count, as before the fix. Compiled programs are shared through a persistent compilation
cache, so every run after the first of each mesh spends its time executing. Busy loops are started
before the first run and killed on exit. The last line printed is one JSON object: runs, aborts (rc
134 or a rendezvous termination message), stuck warnings, wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILDREN: list[subprocess.Popen] = []  # busy loops and the running worker, killed on exit
sys.path.insert(0, os.path.join(ROOT, "tests"))


def worker(args) -> None:
    """One training run in this process (the environment was set by the parent)."""
    import test_mesh_fsdp_tensor as t

    shape = tuple(int(s) for s in args.shape.split(","))
    result = t.train_fsdp_tensor(args.checkpoint, args.workdir, shape, args.schedule)
    print(json.dumps({"steps": [h["step"] for h in result.history]}))


def _trained_steps(stdout: str) -> list[int]:
    """The steps the worker reports having logged (its last stdout line), [] if none."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return list(json.loads(line).get("steps", []))
        except (ValueError, AttributeError):
            continue
    return []


def one_run(args, shape: str, index: int, env: dict, scratch: str) -> dict:
    workdir = os.path.join(scratch, f"run_{shape.replace(',', 'x')}_{index}")
    # A fresh run every time: a finished workdir would make train.run say "finished" and train nothing.
    shutil.rmtree(workdir, ignore_errors=True)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        f"--shape={shape}",
        f"--checkpoint={args.checkpoint}",
        f"--workdir={workdir}",
        f"--schedule={args.schedule}",
    ]
    start = time.perf_counter()
    with subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        CHILDREN.append(p)
        try:
            stdout, stderr = p.communicate(timeout=args.timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            rc = "timeout"
        CHILDREN.remove(p)
    wall = time.perf_counter() - start
    aborted = rc in (134, -6) or "Termination timeout" in stderr
    steps = _trained_steps(stdout)
    if rc == 0 and not steps:
        rc = "trained nothing"
    record = {
        "shape": shape,
        "run": index,
        "rc": rc,
        "steps": steps,
        "aborted": aborted,
        "stuck_warnings": stderr.count("may be stuck"),
        "unstuck": stderr.count("is unstuck"),
        "wall_s": round(wall, 1),
    }
    if rc != 0:
        record["stderr_tail"] = stderr[-1500:]
    print(json.dumps(record), flush=True)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each mesh")
    parser.add_argument("--shapes", default="1,4,2;2,2,2", help="meshes (data,fsdp,tensor), ';'-separated")
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes kept running beside the runs")
    parser.add_argument("--flags", choices=("emulated", "bare"), default="emulated")
    parser.add_argument("--schedule", default="stage1:1,stage2:2")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run counts as hung")
    parser.add_argument("--scratch", default="", help="directory for checkpoints and the compilation cache")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from score_jax import distributed

    scratch = args.scratch or tempfile.mkdtemp(prefix="stress_fsdp_tensor_")
    args.checkpoint = os.path.join(scratch, "qwen2")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.path.join(scratch, "jax_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if args.flags == "emulated":
        env.update(distributed.emulated_cpu_env(8, env))
    else:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        env.pop("NPROC", None)
    if not os.path.exists(os.path.join(args.checkpoint, "config.json")):
        import test_mesh_fsdp_tensor as t

        t.save_checkpoint(args.checkpoint)

    CHILDREN.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy))

    def stop_children(*_):
        for p in list(CHILDREN):
            if p.poll() is None:
                p.kill()
                p.wait()

    def on_term(*_):
        stop_children()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    start = time.perf_counter()
    records = []
    try:
        for index in range(args.runs):
            for shape in args.shapes.split(";"):
                records.append(one_run(args, shape, index, env, scratch))
    finally:
        stop_children()
    summary = {
        "flags": args.flags,
        "xla_flags": env.get("XLA_FLAGS", ""),
        "nproc": env.get("NPROC", ""),
        "busy_processes": args.busy,
        "schedule": args.schedule,
        "runs": len(records),
        "aborts": sum(r["aborted"] for r in records),
        "failures": sum(r["rc"] != 0 for r in records),
        "stuck_warnings": sum(r["stuck_warnings"] for r in records),
        "by_shape": {
            shape: {
                "runs": sum(r["shape"] == shape for r in records),
                "aborts": sum(r["aborted"] for r in records if r["shape"] == shape),
                "median_wall_s": sorted(r["wall_s"] for r in records if r["shape"] == shape)[
                    sum(r["shape"] == shape for r in records) // 2
                ],
            }
            for shape in args.shapes.split(";")
        },
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
