"""Time the small preset's whole DAG and each program's start-up (CPU and wall).

    python workflow/scripts/bench_dag.py --startup            # start-up of each program, cold vs warm
    python workflow/scripts/bench_dag.py --run [--preset small] [--cold] [-- SNAKEMAKE ARGS]
    python workflow/scripts/bench_dag.py --report [--preset small]   # figures of the last run's files

--run runs the README's main command (`snakemake --cores 2 all_tables all_figures --config
preset=<P>`, plus `--config warm_start=false` with --cold) in the working directory and prints
its wall time, its CPU time (user+sys of Snakemake and every job, the warm server's children
included: their CPU is read from the server's log, .snakemake/fisa-warm/*.log), the load
average before and after, and then the --report figures. Start from an empty results/<P> for a
full run's figures (it deletes nothing itself).

--report prints, per rule, the jobs, their summed wall time (results/<P>/benchmarks) and, for
jobs through the warm server, their summed CPU time. Wall times on a loaded machine are
inflated; CPU times are not.

--startup measures `python -m MODULE --help` of each program (the imports; argparse exits
before any work): CPU of a cold process, and CPU of the warm server's child plus its client.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("fisa.engine.train", "fisa.engine.evaluate", "analysis.aggregate", "analysis.tables",
            "analysis.figures", "analysis.curves", "analysis.scorecard")
JOB_LINE = re.compile(r"\] (\d+): exit (-?\d+) cpu ([\d.]+) s")
START_LINE = re.compile(r"\] (\d+): (\S+)")
PRELOAD_LINE = re.compile(r"preloaded \S+ cpu ([\d.]+) s")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def server_logs(workdir: Path) -> dict:
    """CPU of the warm servers' preloads and of each module's jobs, from their logs."""
    preload, per_module, modules = 0.0, collections.defaultdict(list), {}
    for log in sorted((workdir / ".snakemake/fisa-warm").glob("*.log")):
        for line in log.read_text().splitlines():
            if m := PRELOAD_LINE.search(line):
                preload += float(m.group(1))
            elif m := JOB_LINE.search(line):
                per_module[modules.get(m.group(1), "?")].append(float(m.group(3)))
            elif m := START_LINE.search(line):
                modules[m.group(1)] = m.group(2)
    return {"preload": preload, "jobs": per_module}


def report(workdir: Path, preset: str) -> None:
    bench = workdir / f"results/{preset}/benchmarks"
    rows = collections.defaultdict(list)
    for tsv in bench.rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if len(lines) >= 2:
            rows[tsv.relative_to(bench).parts[0]].append(float(lines[-1].split("\t")[0]))
    print(f"{'rule (benchmarks)':28s} {'jobs':>5s} {'wall s':>8s} {'median':>7s}")
    for rule, walls in sorted(rows.items()):
        print(f"{rule:28s} {len(walls):5d} {sum(walls):8.1f} {statistics.median(walls):7.1f}")
    logs = server_logs(workdir)
    if logs["jobs"]:
        print(f"\nwarm server: preload {logs['preload']:.1f} s CPU")
        print(f"{'program (warm children)':28s} {'jobs':>5s} {'CPU s':>8s} {'median':>7s}")
        for module, cpus in sorted(logs["jobs"].items()):
            print(f"{module:28s} {len(cpus):5d} {sum(cpus):8.1f} {statistics.median(cpus):7.2f}")


def run(workdir: Path, preset: str, cold: bool, extra: list[str]) -> None:
    cmd = ["snakemake", "--cores", "2", "all_tables", "all_figures", "--config", f"preset={preset}"]
    if cold:
        cmd.append("warm_start=false")
    cmd += extra
    before_logs = server_logs(workdir)
    before_warm = before_logs["preload"] + sum(sum(v) for v in before_logs["jobs"].values())
    load0 = os.getloadavg()
    cpu0, t0 = children_cpu(), time.monotonic()
    print("$", shlex.join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=workdir)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    load1 = os.getloadavg()
    time.sleep(0.5)
    logs = server_logs(workdir)
    warm = logs["preload"] + sum(sum(v) for v in logs["jobs"].values()) - before_warm
    print(f"\nexit {rc}; wall {wall:.1f} s; CPU {cpu + warm:.1f} s "
          f"(Snakemake and cold jobs {cpu:.1f} s, warm server and its children {warm:.1f} s)")
    print(f"load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}\n")
    report(workdir, preset)
    sys.exit(rc)


def startup() -> None:
    """CPU of `python -m MODULE --help`, cold and through a warm server (in a scratch directory)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("SLURM_JOB_ID", None)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'program':24s} {'cold CPU s':>10s} {'warm CPU s':>10s}")
        for module in PROGRAMS:
            c0 = children_cpu()
            subprocess.run([sys.executable, "-m", module, "--help"], env=dict(env, FISA_WARM="0"),
                           cwd=tmp, stdout=subprocess.DEVNULL, check=True)
            cold = children_cpu() - c0
            warm_env = dict(env, FISA_WARM="1")
            subprocess.run([sys.executable, "-m", "fisa.engine.warm", "-m", module, "--help"], env=warm_env,
                           cwd=tmp, stdout=subprocess.DEVNULL, check=True)   # starts the server
            jobs_before = sum(len(v) for v in server_logs(Path(tmp))["jobs"].values())
            c0 = children_cpu()
            subprocess.run([sys.executable, "-m", "fisa.engine.warm", "-m", module, "--help"], env=warm_env,
                           cwd=tmp, stdout=subprocess.DEVNULL, check=True)
            client = children_cpu() - c0
            for _ in range(50):      # the server logs the child's CPU just after replying
                jobs = server_logs(Path(tmp))["jobs"]
                if sum(len(v) for v in jobs.values()) > jobs_before:
                    break
                time.sleep(0.1)
            child = jobs[module][-1]
            print(f"{module:24s} {cold:10.2f} {client + child:10.2f}", flush=True)
        print(f"(warm server preload: {server_logs(Path(tmp))['preload']:.1f} s CPU, once per workflow)")
        for sock in Path(tmp, ".snakemake/fisa-warm").glob("*.sock"):
            sock.unlink()            # the server exits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", action="store_true")
    mode.add_argument("--report", action="store_true")
    mode.add_argument("--startup", action="store_true")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--cold", action="store_true", help="--config warm_start=false")
    ap.add_argument("--workdir", type=Path, default=Path.cwd())
    ap.add_argument("snakemake_args", nargs="*")
    args = ap.parse_args()
    if args.startup:
        startup()
    elif args.report:
        report(args.workdir, args.preset)
    else:
        run(args.workdir, args.preset, args.cold, args.snakemake_args)


if __name__ == "__main__":
    main()
