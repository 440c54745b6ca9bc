"""What a process may use of the machine: the forked worker pool and the deferred Ctrl-C."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CTRL_C_TWICE = """
import json, os, signal, sys, threading, time
from emolib.machine import forked_map

def busy(job):
    t = time.monotonic()
    while time.monotonic() - t < 0.05:  # a job that does not sleep: a signal lands in Python code
        pass
    return job

def ctrl_c_twice():
    time.sleep(0.5)
    os.killpg(0, signal.SIGINT)  # the terminal's Ctrl-C: every process of the group, the workers too
    time.sleep(0.05)  # the second lands while the pool waits for the jobs handed out
    os.killpg(0, signal.SIGINT)

armed = True

def ctrl_c(signum, frame):  # once the outcome is known, a late second Ctrl-C (a loaded machine) is let go
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, ctrl_c)
threading.Thread(target=ctrl_c_twice, daemon=True).start()
done = []
try:
    for job in forked_map(busy, list(range(400)), 2, "test", chunksize=4):
        done.append(job)
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
armed = False
print(json.dumps({"outcome": outcome, "done": len(done), "in_order": done == list(range(len(done)))}), flush=True)
"""


def test_two_ctrl_cs_during_a_forked_map_stop_it_without_a_hang_or_a_worker_traceback():
    """Ctrl-C in a terminal reaches the workers too, and a second one often follows. The workers
    took it as well (a job failed with it, an idle worker printed a traceback), and a second Ctrl-C
    while the pool waited for its running jobs left the workers waiting for ever for the pool's stop
    message: the command hung after "interrupted" until killed. Found by two Ctrl-Cs of
    `make report` during the corpus generation. The run is a session of its own, so that its
    Ctrl-C reaches nothing else; the timeout only catches the hang."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_TWICE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    seen = json.loads(out)
    assert seen["outcome"] == "interrupted" and 0 < seen["done"] < 400 and seen["in_order"], seen
    assert err == ""  # no worker traceback, nothing "ignored"
    left = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert left == []  # no worker outlives the command
