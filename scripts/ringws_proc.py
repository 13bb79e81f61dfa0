"""A server process for the Python scripts: start it with its arguments, read its `ringws listening on
IP:PORT` line with a timeout, read its memory from /proc, and stop it by PID.

Owns the process lifecycle only; what a script sends to the server is the script's business. It never stops
a process by name, only the one it was given; a server that does not report its address is stopped before
the error is raised. Standard library only (it runs under the system Python and under scripts/.venv).

    import ringws_proc
    server = ringws_proc.start([binary, "serve", "--bind", "127.0.0.1", "--port", "0"])
    host, port = ringws_proc.listening_addr(server)
    ...
    ringws_proc.stop(server)
"""

import os
import queue
import signal
import subprocess
import threading

LISTENING_PREFIX = "ringws listening on "


class StartupError(RuntimeError):
    """The server exited, or printed no listening line in time."""


def start(cmd, stderr=subprocess.DEVNULL, **popen_args):
    """Starts `cmd` (a list) with stdout piped (text) for `listening_addr`."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, **popen_args)


def parse_listening_line(line):
    """(host, port) of a `ringws listening on IP:PORT` line, or None if it is not one."""
    if not line.startswith(LISTENING_PREFIX):
        return None
    host, _, port = line[len(LISTENING_PREFIX):].strip().rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def listening_addr(process, timeout=20.0):
    """Reads `process`'s stdout up to its listening line and returns (host, port). Raises StartupError,
    after stopping the process, if it exits first or `timeout` seconds pass."""
    lines = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
            if parse_listening_line(line) is not None:
                return
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            stop(process)
            raise StartupError(f"pid {process.pid} printed no listening line within {timeout:.0f} s "
                               f"(stdout so far: {''.join(seen)!r})") from None
        if line is None:
            stop(process)
            raise StartupError(f"pid {process.pid} exited (status {process.returncode}) before its listening "
                               f"line (stdout: {''.join(seen)!r})")
        addr = parse_listening_line(line)
        if addr is not None:
            return addr
        seen.append(line)


def status_fields(pid, names=("VmRSS",)):
    """{name: number} of the fields `names` of /proc/PID/status (the memory ones in KiB, e.g. VmRSS; counts
    such as Threads as they are). Missing fields are absent; {} if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in names:
                    out[name] = int(rest.split()[0])
    except OSError:
        pass
    return out


def rss_kib(pid):
    """Resident memory of `pid` (VmRSS), in KiB."""
    rss = status_fields(pid).get("VmRSS")
    if rss is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return rss


def stop(process, timeout=10.0):
    """SIGTERM to the process (by its PID), then SIGKILL if it has not exited after `timeout` seconds.
    Returns (exit status, True if it had to be killed)."""
    if process.poll() is not None:
        return process.returncode, False
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(), True


if __name__ == "__main__":
    # Self-check of the line parser (no server needed): python3 scripts/ringws_proc.py
    assert parse_listening_line("ringws listening on 127.0.0.1:40123\n") == ("127.0.0.1", 40123)
    assert parse_listening_line("listening on 127.0.0.1:1") is None
    assert parse_listening_line("ringws listening on 127.0.0.1:x") is None
    assert rss_kib(os.getpid()) > 0
    print("ringws_proc: ok")
