"""Warm start of local jobs: `python -m fisa.engine.warm -m MODULE ARGS...` runs
`python -m MODULE ARGS...`, through a server that has imported torch, the engine and the
analysis programs once.

Most of a small-preset job is Python start-up (importing torch, torchvision and open_clip
costs several CPU seconds; the work of an evaluation or a table is often less). One server
per workflow directory and Python environment imports the programs once and forks a child
per job. The client (this module; it imports only the standard library) hands the server its
argv, working directory, environment and stdin/stdout/stderr (SCM_RIGHTS over a UNIX socket
under .snakemake/), forwards the signals it receives to the child and exits with the child's
exit code (or dies of the child's signal). The child runs the module as `python -m` would
(`runpy`, `__name__ == "__main__"`), so programs, their run configs, their seeding and
their exit codes (65/75/78) are the same.

Cold start (`os.execv` of `python -m MODULE`, nothing else) when:
- FISA_WARM is not "1": the workflow sets it only for local execution with
  `execution.warm_start` on (workflow/rules/common.smk); never for SLURM, where a server
  would live in one job's cgroup;
- SLURM_JOB_ID is set (inside a SLURM job, whatever FISA_WARM says);
- the server cannot be started, or its code is stale (a source file it imported changed).

The server is keyed by what shapes a process before `main` runs (the interpreter,
PYTHONPATH, thread-count variables, CUDA_VISIBLE_DEVICES, PYTHONHASHSEED, the preload list):
a job whose key differs gets its own server. It never runs torch code itself (a forked
child initialises torch's thread pool as a fresh process would) and exits after
`IDLE_SECONDS` without jobs, or when its socket file disappears.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

# long enough to outlive the cold jobs between warm ones (the small preset's CLIP pre-training);
# the workflow stops it at its end (onsuccess/onerror)
IDLE_SECONDS = 300.0
START_TIMEOUT = 300.0      # the server's imports; generous, the machine may be loaded
SOCKET_DIR = ".snakemake/fisa-warm"
# What the server imports before its first fork (FISA_WARM_PRELOAD, comma-separated, overrides).
# Besides the programs: what they import lazily in every job (measured with a set difference of
# sys.modules around a job: the generator's transformers modules ~0.5 CPU s an evaluation or
# training, the config schema, the metrics, the PDF backend and its font subsetter).
PRELOAD = ("torch", "fisa.engine.train", "fisa.engine.evaluate", "fisa.engine.efficiency",
           "fisa.engine.train_generator", "fisa.engine.fetch", "fisa.engine.pretrain_clip", "fisa.data.synthetic",
           "analysis.aggregate", "analysis.tables", "analysis.figures", "analysis.curves", "analysis.scorecard",
           "transformers.models.mask2former.modeling_mask2former", "transformers.models.swin.modeling_swin",
           "jsonschema", "fisa.data.datasets", "fisa.data.transforms", "fisa.metrics.panoptic", "fisa.models.tiny_eva",
           "matplotlib.backends.backend_pdf", "matplotlib.backends.backend_agg", "fontTools.subset")
# Caches every job fills the same way, filled once by the server after the preload (module,
# function, arguments; run only when the preload imported the module): the config schema
# (fisa.config._schema, ~0.1 CPU s of YAML parsing per job; its data files join the stale check)
# and transformers' checkpoint-renaming table (~0.1 s of regex compiling per model load).
WARMUP = (("fisa.config", "_schema", ()),
          ("transformers.conversion_mapping", "get_checkpoint_conversion_mapping", ("mask2former",)))
# Environment that acts before `main` runs (interpreter start-up, library loading).
KEY_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONSAFEPATH", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
           "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
           "NUMEXPR_NUM_THREADS", "FISA_WARM_PRELOAD")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def usage_error(msg: str) -> None:
    print(f"fisa.engine.warm: {msg}\nusage: python -m fisa.engine.warm -m MODULE [ARGS...]", file=sys.stderr)
    sys.exit(2)


def cold(module: str, args: list[str]) -> None:
    """Replace this process by `python -m module args` (the same interpreter)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def preload_list(env) -> list[str]:
    raw = env.get("FISA_WARM_PRELOAD")
    return [m for m in raw.split(",") if m] if raw is not None else list(PRELOAD)


def server_key(env) -> str:
    blob = json.dumps([sys.executable, [env.get(k) for k in KEY_ENV], preload_list(env)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- framing: 4-byte length + JSON --------------------------------------------------------
def send_msg(sock: socket.socket, payload: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(payload).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [frame], fds)
        if sent < len(frame):            # never send(b""): the peer may have replied and closed already
            sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def _recv_exact(sock: socket.socket, n: int, buf: bytes = b"") -> bytes:
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def recv_msg(sock: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, with_fds)
        if not head:
            raise ConnectionError("connection closed")
        head = _recv_exact(sock, 4, head)
    else:
        head = _recv_exact(sock, 4)
    (n,) = struct.unpack("!I", head)
    return json.loads(_recv_exact(sock, n)), fds


# ---- client --------------------------------------------------------------------------------
def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _start_server(path: str) -> socket.socket | None:
    """Connect to the server at `path`, starting it first if none answers (one starter at a time)."""
    import fcntl
    import subprocess

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # another client may be starting it: wait, then connect
        sock = _connect(path)
        if sock is not None:
            return sock
        if os.path.exists(path):
            os.unlink(path)                  # a dead server's socket
        with open(path + ".log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "fisa.engine.warm", "--serve", path],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            sock = _connect(path)
            if sock is not None:
                return sock
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        return None


def client(module: str, args: list[str]) -> None:
    env = dict(os.environ)
    if env.get("FISA_WARM") != "1" or env.get("SLURM_JOB_ID"):
        cold(module, args)
    path = os.path.join(SOCKET_DIR, server_key(env) + ".sock")   # relative: sun_path stays short
    try:
        sock = _connect(path) or _start_server(path)
    except OSError:
        sock = None
    if sock is None:
        cold(module, args)
    with sock:
        send_msg(sock, {"module": module, "args": args, "cwd": os.getcwd(), "env": env}, fds=[0, 1, 2])
        reply, _ = recv_msg(sock)
        if reply.get("cold"):           # the server's code is stale: it has exited
            cold(module, args)
        pid = reply["pid"]
        for sig in FORWARDED:
            signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
        try:
            reply, _ = recv_msg(sock)
        except ConnectionError:
            print(f"fisa.engine.warm: the server lost job {module} (pid {pid})", file=sys.stderr)
            sys.exit(1)
    if "signal" in reply:               # die as the child did, so the shell sees the same status
        sig = reply["signal"]
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(1)
    sys.exit(reply["exit"])


# ---- server --------------------------------------------------------------------------------
def _code_files() -> dict[str, int]:
    """mtimes of the imported source files outside the interpreter's own library (fisa, analysis)."""
    skip = tuple(p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    out = {}
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if f and f.endswith(".py") and not f.startswith(skip):
            try:
                out[f] = os.stat(f).st_mtime_ns
            except OSError:
                pass
    return out


def _stale(files: dict[str, int]) -> bool:
    for f, mtime in files.items():
        try:
            if os.stat(f).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process and run its module as `python -m` does."""
    import atexit
    import io
    import random
    import runpy

    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    for sig in FORWARDED + (signal.SIGCHLD,):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # stdio as a fresh interpreter makes them (line-buffered on a terminal, stderr always)
    enc = sys.stdout.encoding
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding=enc)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding=enc,
                                                   line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.open(2, "wb", closefd=False), encoding=enc,
                                                   errors="backslashreplace", line_buffering=True)
    # state a fresh interpreter draws from the OS (forked children would otherwise share it)
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    sys.path[0] = request["cwd"]         # `python -m` puts the working directory first
    sys.argv = [request["module"], *request["args"]]   # runpy replaces argv[0] by the module's file
    # run the module's code as __main__ only, as `python -m` does (its preloaded copy under its
    # own name would make runpy warn); what it imports stays loaded
    sys.modules.pop(request["module"], None)
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    import importlib
    import selectors
    import traceback

    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')} {os.getpid()}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.process_time()
    for name in preload_list(os.environ):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a program that fails to import fails in its own child, as cold
            log(f"preload {name} failed:\n{traceback.format_exc()}")
    for module, function, args in WARMUP:
        if module in sys.modules:
            try:
                getattr(sys.modules[module], function)(*args)
            except Exception:  # noqa: BLE001 - a job then fills the cache itself, as cold
                log(f"warm-up {module}.{function} failed:\n{traceback.format_exc()}")
    log(f"preloaded {','.join(preload_list(os.environ))} cpu {time.process_time() - t0:.3f} s")
    files = _code_files()
    config = sys.modules.get("fisa.config")
    for data in (getattr(config, "SCHEMA_PATH", None), getattr(config, "VARIANT_TABLE", None)):
        if data is not None and os.path.exists(data):   # the schema cache reads them
            files[str(data)] = os.stat(data).st_mtime_ns
    tmp = f"{path}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)                 # clients connect only once the imports are done
    inode = os.stat(path).st_ino
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    jobs: dict[int, socket.socket] = {}  # child pid -> its client's connection
    last = time.monotonic()

    def shutdown(*_):
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    while True:
        for key, _ in sel.select(timeout=0.05):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.settimeout(30)
                try:
                    request, fds = recv_msg(conn, with_fds=3)
                except (OSError, ValueError, ConnectionError) as e:
                    log(f"bad request: {e}")
                    conn.close()
                    continue
                if _stale(files):
                    log("a source file changed: exiting (the job starts cold)")
                    send_msg(conn, {"cold": True})
                    shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    for c in jobs.values():
                        c.close()
                    conn.close()
                    _run_child(request, fds)
                for fd in fds:
                    os.close(fd)
                send_msg(conn, {"pid": pid})
                jobs[pid] = conn
                sel.register(conn, selectors.EVENT_READ, pid)
                log(f"{pid}: {request['module']} {' '.join(request['args'])}")
            else:                        # the client hung up before its job ended: end the job
                try:
                    gone = key.fileobj.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    sel.unregister(key.fileobj)
                    os.kill(key.data, signal.SIGTERM)
        while jobs:                      # reap finished children, report their status
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = jobs.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            # the job's CPU time: its process tree is not Snakemake's (benchmarks miss it), so
            # workflow/scripts/bench_dag.py reads it from here
            log(f"{pid}: exit {code} cpu {usage.ru_utime + usage.ru_stime:.3f} s")
            try:
                send_msg(conn, {"signal": -code} if code < 0 else {"exit": code})
            except OSError:
                pass
            try:
                sel.unregister(conn)
            except KeyError:             # already dropped: its client hung up
                pass
            conn.close()
            last = time.monotonic()
        try:
            moved = os.stat(path).st_ino != inode
        except OSError:
            moved = True
        if moved or (not jobs and time.monotonic() - last > IDLE_SECONDS):
            log("socket gone" if moved else "idle: exiting")
            shutdown()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"] and len(argv) == 2:
        serve(argv[1])
    elif len(argv) >= 2 and argv[0] == "-m":
        client(argv[1], argv[2:])
    else:
        usage_error("expected -m MODULE")


if __name__ == "__main__":
    main()
