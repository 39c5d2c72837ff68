"""Workers start shielded from the job signals, from their very first instruction."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.integration,  # subprocesses
              pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")]

# Run in a fresh interpreter: multiprocessing's resource tracker must not be running yet, because
# launching it unblocks SIGINT and SIGTERM in the parent (the race that let a Ctrl-C kill a worker
# while it was still importing, with a traceback on the shared stderr).
PROBE = textwrap.dedent("""
    import signal, sys
    from molpt_tui.processes import JOB_SIGNALS, start_worker

    def report(conn):
        # before ignore_job_signals: what the interpreter inherited
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        conn.send(sorted(s.name for s in blocked))
        conn.close()

    if __name__ == "__main__":
        proc, conn = start_worker(report)
        blocked = conn.recv()
        proc.join(10)
        mine = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        wanted = sorted(n for n in JOB_SIGNALS if hasattr(signal, n))
        print("worker", ",".join(blocked))
        print("wanted", ",".join(wanted))
        print("parent", ",".join(sorted(s.name for s in mine)))
""")


def test_a_worker_starts_with_the_job_signals_blocked_and_the_parent_keeps_its_mask(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True,
                         cwd=tmp_path).stdout
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.splitlines())
    assert set(lines["wanted"].split(",")) <= set(lines["worker"].split(",")), out
    assert lines["parent"] == "", out  # the mask is restored once the worker is started


def test_ignoring_the_job_signals_discards_a_pending_one_and_clears_the_mask():
    script = textwrap.dedent("""
        import os, signal
        from molpt_tui.processes import ignore_job_signals
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        os.kill(os.getpid(), signal.SIGINT)  # pending, as if Ctrl-C came while starting
        ignore_job_signals()                 # would raise KeyboardInterrupt if it were delivered
        print("alive", sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, set())))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "alive []", out.stderr
