"""fisa.engine.warm: a job through the warm server behaves as `python -m MODULE` does
(output, exit codes, a crash, signals), and starts cold where it must."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import json, os, signal, sys, time
    import warmhelper

    mode = sys.argv[1]
    print(json.dumps({"pid": os.getpid(), "name": __name__, "argv": sys.argv[1:], "cwd": os.getcwd(),
                      "probe": os.environ.get("PROBE"), "helper": warmhelper.VALUE}), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if mode == "exit":
        sys.exit(int(sys.argv[2]))
    if mode == "crash":
        raise RuntimeError("the probe failed")
    if mode == "preempt":          # the engine's way: checkpoint on SIGTERM, exit 75
        # os.write: the signal may arrive while print("ready") still holds stdout's buffer
        signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b"got SIGTERM\\n"), sys.exit(75)))
    if mode in ("preempt", "sleep"):
        print("ready", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "warmprobe.py").write_text(PROBE)
    (tmp_path / "warmhelper.py").write_text("VALUE = 1\n")
    yield tmp_path
    for sock in (tmp_path / ".snakemake/fisa-warm").glob("*.sock"):
        sock.unlink()                # the server exits when its socket is gone


def env_of(workdir, warm=True, **extra):
    env = dict(os.environ, PYTHONPATH=f"{workdir}{os.pathsep}{REPO}", FISA_WARM="1" if warm else "0",
               FISA_WARM_PRELOAD="json,warmhelper", PROBE="from the client")
    env.pop("SLURM_JOB_ID", None)
    env.update(extra)
    return env


def start(workdir, *args, **env):
    return subprocess.Popen([sys.executable, "-m", "fisa.engine.warm", "-m", "warmprobe", *args], cwd=workdir,
                            env=env_of(workdir, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(workdir, *args, **env):
    p = start(workdir, *args, **env)
    out, err = p.communicate(timeout=120)
    return p, out, err


def record(out):
    import json

    return json.loads(out.splitlines()[0])


@pytest.mark.parametrize("code", [0, 65, 75, 78])
def test_a_warm_job_has_the_cold_jobs_output_and_exit_code(workdir, code):
    cold, cold_out, cold_err = run(workdir, "exit", str(code), warm=False)
    warm, warm_out, warm_err = run(workdir, "exit", str(code))
    assert cold.returncode == warm.returncode == code
    assert cold_err == warm_err == "to stderr\n"
    c, w = record(cold_out), record(warm_out)
    assert c["pid"] == cold.pid             # cold: exec'd in place
    assert w["pid"] != warm.pid             # warm: a child of the server
    for key in ("name", "argv", "cwd", "probe", "helper"):
        assert c[key] == w[key]
    assert w["name"] == "__main__" and w["argv"] == ["exit", str(code)] and w["probe"] == "from the client"


def test_the_server_is_reused_and_each_job_gets_its_own_process(workdir):
    pids = [record(run(workdir, "exit", "0")[1])["pid"] for _ in range(3)]
    assert len(set(pids)) == 3
    assert len(list((workdir / ".snakemake/fisa-warm").glob("*.sock"))) == 1


def test_a_crash_exits_1_with_its_traceback(workdir):
    p, _, err = run(workdir, "crash")
    assert p.returncode == 1
    assert "Traceback" in err and "RuntimeError: the probe failed" in err


def wait_ready(p):
    record(p.stdout.readline())
    assert p.stdout.readline() == "ready\n"


def test_a_signal_reaches_the_job_and_its_exit_code_comes_back(workdir):
    p = start(workdir, "preempt")
    wait_ready(p)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert "got SIGTERM" in out
    assert p.returncode == 75


def test_a_job_killed_by_a_signal_kills_the_client_with_it(workdir):
    p = start(workdir, "sleep")
    wait_ready(p)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGTERM


def test_a_changed_source_file_restarts_cold(workdir):
    assert record(run(workdir, "exit", "0")[1])["helper"] == 1
    helper = workdir / "warmhelper.py"
    helper.write_text("VALUE = 2\n")
    st = helper.stat()
    os.utime(helper, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    p, out, err = run(workdir, "exit", "0")
    assert p.returncode == 0, err
    assert record(out)["helper"] == 2 and record(out)["pid"] == p.pid   # cold, with the new code
    deadline = time.monotonic() + 30
    while list((workdir / ".snakemake/fisa-warm").glob("*.sock")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list((workdir / ".snakemake/fisa-warm").glob("*.sock"))     # the stale server left
    p, out, _ = run(workdir, "exit", "0")
    assert record(out)["helper"] == 2 and record(out)["pid"] != p.pid   # a fresh server


def test_inside_a_slurm_job_it_starts_cold(workdir):
    p, out, _ = run(workdir, "exit", "0", SLURM_JOB_ID="123")
    assert record(out)["pid"] == p.pid
    assert not (workdir / ".snakemake/fisa-warm").exists()


def test_without_a_module_it_names_the_usage():
    p = subprocess.run([sys.executable, "-m", "fisa.engine.warm", "fisa.engine.evaluate"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 2 and "expected -m MODULE" in p.stderr
