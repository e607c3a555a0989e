#!/usr/bin/env python3
"""Executor: runs Python or shell snippets under limits, as a JSON-lines process agent.

Protocol (DESIGN section 7, `process` runtime, `jsonl`):

- on start: `{"ready": true}`, or `{"unavailable": "..."}` and exit 0 when a
  limit in the environment is not a valid number;
- in, one JSON object per line: `{"id": ..., "type": "code.execute", "input":
  {"language": "python" | "sh", "code": "..."}}` (`language` defaults to
  `python`; a plain string `input` is Python code);
- out, one JSON object per line: `{"id": ..., "output": {"language",
  "stdout", "stderr", "exit_code", "signal", "duration_seconds",
  "truncated", "stdout_bytes", "stderr_bytes"}}`, or `{"id": ..., "error":
  {"code", "message"}}` with code `timeout` (the wall-clock limit passed and
  the snippet was killed), `disabled`, `invalid_input`, `exec_failed` or
  `malformed_json`.

A snippet that exits on its own is an answer, whatever its status:
`exit_code` is its exit status, or 128 + N when signal N ended it
(`signal` then names it, e.g. `SIGXCPU` at the CPU limit). A snippet that
outgrows the memory limit gets allocation failures: Python raises
`MemoryError` (exit code 1, the traceback in `stderr`), other programs fail
in their own way or are killed.

Each request runs in its own thread, so a long snippet does not hold up the
others. Each snippet:

- is written to a fresh scratch directory (`tempfile.mkdtemp`), which is its
  working directory, `HOME` and `TMPDIR`, and is removed afterwards;
- runs as `python3 -I -B snippet.py` or `/bin/sh snippet.sh` in a new
  session (its own process group), with stdin from /dev/null;
- gets an environment of `PATH=/usr/bin:/bin`, `HOME`, `TMPDIR` and
  `LANG=C.UTF-8` only: nothing of the agent's (or the daemon's) environment
  is inherited, so no API key or token reaches it;
- has RLIMIT_AS = `EXECUTOR_MEMORY_BYTES`, RLIMIT_CPU = the wall-clock limit
  rounded up plus one second (a backstop), no core files, and SIGKILL if
  this agent dies (PR_SET_PDEATHSIG);
- is killed with its whole process group at `EXECUTOR_TIMEOUT_SECS` of wall
  clock; processes it left behind in its group are killed when it exits;
- has stdout and stderr each kept up to `EXECUTOR_OUTPUT_BYTES` (the rest is
  read and dropped; `truncated` says so).

This is a resource fence, not an isolation boundary: the snippet runs as the
same user as agentvisor, can read what that user can read and can use the
network. Expose `code.execute` only to callers you would give a shell to
(agentvisor's `executor.enabled` defaults to true only when every listener
is on loopback).

Settings, from the environment (the catalog spec's `runtime.env`, overridden
by agentvisor's `executor.*` settings):

- `EXECUTOR_ENABLED`: `1` (default) or `0`; when `0` every request answers
  the error `disabled`;
- `EXECUTOR_TIMEOUT_SECS`: wall-clock limit per snippet, seconds (default 10);
- `EXECUTOR_MEMORY_BYTES`: address-space limit per snippet, bytes (default
  512 MiB);
- `EXECUTOR_OUTPUT_BYTES`: most bytes kept of stdout and of stderr each
  (default 65536).

The program exits with status 0 at end of input, once the snippets still
running have answered, or on SIGTERM, killing them first (their own
descendants that left the process group with setsid(2) are beyond its reach).
Standard library only.
"""

import ctypes
import json
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Defaults match agentvisor's `ExecutorSettings::default()`.
DEFAULT_TIMEOUT_SECS = 10.0
DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
DEFAULT_OUTPUT_BYTES = 65536
# Longest snippet accepted, in characters (the bus takes 1 MiB messages).
MAX_CODE_CHARS = 1_000_000
# Seconds to keep reading a snippet's pipes after it exited, when a process
# outside its group still holds them open.
DRAIN_GRACE_SECONDS = 1.0
# Bytes read from a pipe at a time.
READ_CHUNK_BYTES = 65536
# The whole environment of a snippet, besides HOME and TMPDIR.
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
LANGUAGES = {"python": "python", "python3": "python", "sh": "sh", "shell": "sh"}
HOW_TO_ENABLE = (
    "set executor.enabled: true in agentvisor.yaml (unset, it is true only when "
    "the HTTP server and the bus listen on loopback addresses)"
)
# prctl(2) option number, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1

_out_lock = threading.Lock()
# Process group ids of the snippets running now (killed on shutdown).
_running = set()
_running_lock = threading.Lock()
# Request id -> process group of its running snippet (for cancel notices).
_by_request = {}
# Request threads, joined on shutdown so scratch directories get removed.
_threads = []
# Seconds shutdown waits for request threads to clean up after the kill.
SHUTDOWN_JOIN_SECONDS = 2.0


class ConfigError(Exception):
    """A setting in the environment is not usable; its text says which."""


class RequestError(Exception):
    """A request that cannot run; `code` is the wire error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def emit(obj):
    """Write one JSON line to stdout and flush it (one writer at a time)."""
    line = json.dumps(obj) + "\n"
    with _out_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # agentvisor is gone or stopping: nobody reads this answer


def log(message):
    """One line to stderr (agentvisor logs it)."""
    sys.stderr.write(f"executor: {message}\n")
    sys.stderr.flush()


class Limits:
    """The settings of this run, read once from the environment."""

    def __init__(self, environ):
        self.enabled = self._flag(environ, "EXECUTOR_ENABLED", True)
        self.timeout_secs = self._number(environ, "EXECUTOR_TIMEOUT_SECS", DEFAULT_TIMEOUT_SECS, float)
        self.memory_bytes = self._number(environ, "EXECUTOR_MEMORY_BYTES", DEFAULT_MEMORY_BYTES, int)
        self.output_bytes = self._number(environ, "EXECUTOR_OUTPUT_BYTES", DEFAULT_OUTPUT_BYTES, int)
        if self.timeout_secs <= 0 or not math.isfinite(self.timeout_secs):
            raise ConfigError("EXECUTOR_TIMEOUT_SECS must be a positive number of seconds")
        if self.memory_bytes <= 0:
            raise ConfigError("EXECUTOR_MEMORY_BYTES must be a positive number of bytes")
        if self.output_bytes < 0:
            raise ConfigError("EXECUTOR_OUTPUT_BYTES must not be negative")
        # RLIMIT_CPU backstop: whole seconds, at least the wall-clock limit.
        self.cpu_secs = int(math.ceil(self.timeout_secs)) + 1

    @staticmethod
    def _flag(environ, name, default):
        raw = environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")

    @staticmethod
    def _number(environ, name, default, kind):
        raw = environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if kind is int:
            if not math.isfinite(value) or value != int(value):
                raise ConfigError(f"{name} must be a whole number, got {raw!r}")
            return int(value)
        return value


def _clamp(limit_id, wanted):
    """The soft/hard pair for `wanted`, never above the current hard limit
    (raising a hard limit needs privileges; setrlimit would fail)."""
    _, hard = resource.getrlimit(limit_id)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    return wanted


def _libc_prctl():
    """libc's prctl, or None when it cannot be loaded."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def make_preexec(limits):
    """The function run in the child between fork and exec: rlimits and the
    parent-death signal. Everything is computed here, in the parent, so the
    child only makes system calls (no imports, no allocation to speak of)."""
    memory = _clamp(resource.RLIMIT_AS, limits.memory_bytes)
    cpu_soft = _clamp(resource.RLIMIT_CPU, limits.cpu_secs)
    cpu_hard = _clamp(resource.RLIMIT_CPU, limits.cpu_secs + 1)
    prctl = _PRCTL
    sigkill = int(signal.SIGKILL)

    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sigkill)

    return preexec


def parse_request(value):
    """Return (language, code) from a request's `input`."""
    if isinstance(value, str):
        language, code = "python", value
    elif isinstance(value, dict):
        code = value.get("code")
        if not isinstance(code, str):
            raise RequestError("invalid_input", "input.code must be a string")
        name = value.get("language", "python")
        if not isinstance(name, str) or name.strip().lower() not in LANGUAGES:
            raise RequestError("invalid_input", "input.language must be python or sh")
        language = LANGUAGES[name.strip().lower()]
    else:
        raise RequestError("invalid_input", "input must be an object {language, code} or a string of Python code")
    if not code.strip():
        raise RequestError("invalid_input", "code is empty")
    if len(code) > MAX_CODE_CHARS:
        raise RequestError("invalid_input", f"code is longer than {MAX_CODE_CHARS} characters")
    return language, code


class Capture:
    """The first `limit` bytes of one output stream, and how many came."""

    def __init__(self, limit):
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def truncated(self):
        return self.total > len(self.kept)

    def text(self):
        return self.kept.decode("utf-8", "replace")


def kill_group(pgid):
    """SIGKILL a process group; a group already gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pump(proc, captures, deadline):
    """Read the child's pipes until both close; kill the group at `deadline`
    (monotonic seconds). Returns True when the wall-clock limit killed it."""
    timed_out = False
    exited_at = None
    with selectors.DefaultSelector() as sel:
        for stream, capture in captures:
            sel.register(stream, selectors.EVENT_READ, capture)
        while sel.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                # Its leftovers may hold the pipes open.
                kill_group(proc.pid)
            if exited_at is None and now >= deadline:
                timed_out = True
                kill_group(proc.pid)
                proc.wait()
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_GRACE_SECONDS:
                # Something outside the group (it called setsid) holds them.
                break
            wait = 0.1 if exited_at is not None else max(0.0, min(0.1, deadline - now))
            for key, _ in sel.select(timeout=wait):
                data = os.read(key.fd, READ_CHUNK_BYTES)
                if data:
                    key.data.add(data)
                else:
                    sel.unregister(key.fileobj)
    return timed_out


def python_program():
    """The interpreter for Python snippets: this one, or python3 on PATH."""
    return sys.executable or shutil.which("python3") or "/usr/bin/python3"


def execute(language, code, limits, request_id=None):
    """Run one snippet under the limits; return the output object.

    Raises RequestError `timeout` when the wall-clock limit killed it, and
    `exec_failed` when it could not be started.
    """
    scratch = tempfile.mkdtemp(prefix="agentvisor-exec-")
    try:
        if language == "python":
            path = os.path.join(scratch, "snippet.py")
            argv = [python_program(), "-I", "-B", path]
        else:
            path = os.path.join(scratch, "snippet.sh")
            argv = ["/bin/sh", path]
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        env = dict(BASE_ENV, HOME=scratch, TMPDIR=scratch)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,
                preexec_fn=make_preexec(limits),
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise RequestError("exec_failed", f"cannot start {argv[0]}: {e}") from None
        with _running_lock:
            _running.add(proc.pid)
            if request_id is not None:
                _by_request[request_id] = proc.pid
        try:
            out, err = Capture(limits.output_bytes), Capture(limits.output_bytes)
            timed_out = pump(proc, [(proc.stdout, out), (proc.stderr, err)], started + limits.timeout_secs)
            status = proc.wait()
            duration = time.monotonic() - started
        finally:
            # Whatever the snippet left running in its group goes too.
            kill_group(proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            with _running_lock:
                _running.discard(proc.pid)
                _by_request.pop(request_id, None)
        if timed_out:
            raise RequestError(
                "timeout",
                f"the snippet ran longer than the wall-clock limit of {limits.timeout_secs:g} s and was killed "
                "(executor.timeout_secs)",
            )
        if status < 0:
            sig = -status
            exit_code = 128 + sig
            try:
                sig_name = signal.Signals(sig).name
            except ValueError:
                sig_name = f"signal {sig}"
        else:
            exit_code, sig_name = status, None
        return {
            "language": language,
            "stdout": out.text(),
            "stderr": err.text(),
            "exit_code": exit_code,
            "signal": sig_name,
            "duration_seconds": round(duration, 3),
            "truncated": out.truncated or err.truncated,
            "stdout_bytes": out.total,
            "stderr_bytes": err.total,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def handle(request, limits):
    """Answer one decoded request (runs in its own thread)."""
    request_id = request.get("id")
    try:
        if not limits.enabled:
            raise RequestError("disabled", f"code execution is disabled: {HOW_TO_ENABLE}")
        if "input" not in request:
            raise RequestError("invalid_input", "missing field: input")
        language, code = parse_request(request["input"])
        emit({"id": request_id, "output": execute(language, code, limits, request_id)})
    except RequestError as e:
        emit({"id": request_id, "error": {"code": e.code, "message": str(e)}})
    except Exception as e:  # noqa: BLE001 - every request gets an answer
        emit({"id": request_id, "error": {"code": "exec_failed", "message": f"{type(e).__name__}: {e}"}})


def dispatch(line, limits):
    """Decode one input line and start its thread."""
    try:
        request = json.loads(line)
    except ValueError as e:
        emit({"id": None, "error": {"code": "malformed_json", "message": f"invalid JSON: {e}"}})
        return
    if not isinstance(request, dict):
        emit({"id": None, "error": {"code": "malformed_json", "message": "each line must be a JSON object"}})
        return
    if "cancel" in request:
        # agentvisor's cancel notice (client gone, deadline): kill that snippet.
        # No answer: the caller already got `cancelled`.
        with _running_lock:
            pgid = _by_request.get(request["cancel"])
        if pgid is not None:
            kill_group(pgid)
        return
    thread = threading.Thread(target=handle, args=(request, limits), daemon=True)
    _threads[:] = [t for t in _threads if t.is_alive()]
    _threads.append(thread)
    thread.start()


def finish_running():
    """End of input: let the snippets still running finish (each is bounded
    by the wall-clock limit) and answer."""
    for thread in list(_threads):
        thread.join()


def kill_running():
    """SIGTERM: SIGKILL every snippet still running, then give their threads
    a moment to remove the scratch directories."""
    with _running_lock:
        groups = list(_running)
    for pgid in groups:
        kill_group(pgid)
    until = time.monotonic() + SHUTDOWN_JOIN_SECONDS
    for thread in list(_threads):
        thread.join(max(0.0, until - time.monotonic()))


def on_sigterm(_signum, _frame):
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    # A stray non-UTF-8 byte must cost one request, not the whole process.
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    try:
        try:
            limits = Limits(os.environ)
        except ConfigError as e:
            emit({"unavailable": str(e)})
            return 0
        if not limits.enabled:
            log(f"code execution is disabled; every request answers `disabled` ({HOW_TO_ENABLE})")
        emit({"ready": True})
        for raw in sys.stdin:
            line = raw.strip()
            if line:
                dispatch(line, limits)
        finish_running()
    except (BrokenPipeError, KeyboardInterrupt, SystemExit):
        kill_running()
    return 0


if __name__ == "__main__":
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)
