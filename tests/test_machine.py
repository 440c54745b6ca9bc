"""What a process may use of the machine: the forked worker pool and the deferred Ctrl-C."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


KILLED_WITH_A_LOCK = """
import fcntl, os, sys, time
from emolib.machine import forked_map

lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)  # as a run or a cache folder's work lock is held

def slow(job):
    time.sleep(0.2)
    return job

for job in forked_map(slow, list(range(1000)), 2, "test"):
    if job == 2:
        print(os.getpid(), flush=True)
"""


@pytest.mark.parametrize("linux_prctl", [True, False], ids=["prctl", "watch-thread"])
def test_a_kill_9_of_the_command_ends_its_workers_and_frees_its_locks(tmp_path, linux_prctl):
    """A forked worker inherits the command's open files, so the flock on a run's or a cache's lock
    file: workers that outlived a `kill -9` of the command (or the OOM killer) held it for ever, and
    every later command waited for "another process (pid N)" that no longer existed. Found by killing
    `python -m emolib teacher` during the eGeMAPS extraction. The other way, the thread, is what a
    system without prctl gets."""
    import fcntl
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    script = KILLED_WITH_A_LOCK if linux_prctl else KILLED_WITH_A_LOCK.replace(
        "from emolib.machine import forked_map", "import emolib.machine as m; m.sys.platform = 'other'; forked_map = m.forked_map")
    lock = tmp_path / "fold1.lock"
    proc = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == str(proc.pid)  # the workers are at work
        workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with open(lock) as f:
            deadline = time.monotonic() + 30  # the watch thread looks once a second
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "a worker still holds the dead command's lock"
                    time.sleep(0.1)
        while True:  # and no worker is left running (a zombie waits for whoever adopted it to reap it)
            left = [line.split()[0] for line in subprocess.run(
                ["ps", "-o", "pid=,stat=", "-s", str(proc.pid)], capture_output=True, text=True).stdout.splitlines()
                if not line.split()[1].startswith("Z")]
            if not left:
                break
            assert time.monotonic() < deadline, f"workers {left} outlived the command"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)


def _cgroups(tmp_path: Path, memberships: str, mounts: list[tuple[str, str, str, str]],
             files: dict[str, str]) -> Path:
    """A fake /proc/self: its cgroup file, its mountinfo (one line per (root, mount point under
    tmp_path, fstype, super options)), and the cgroup files below the mount points."""
    proc = tmp_path / "proc"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(memberships)
    lines = [f"{30 + k} 1 0:{26 + k} {root} {tmp_path / point} rw,nosuid shared:{k} - {fstype} {fstype} {options}"
             for k, (root, point, fstype, options) in enumerate(mounts)]
    lines.insert(0, "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw")  # not a cgroup
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return proc


def test_a_cgroup_v2_quota_is_read_as_cpus_and_the_tightest_of_the_hierarchy_counts(tmp_path):
    from emolib.machine import cgroup_cpu_limit

    # a container that sees its own cgroup as the root: `docker run --cpus 2.5`
    proc = _cgroups(tmp_path / "docker", "0::/\n", [("/", "cg", "cgroup2", "rw")], {"cg/cpu.max": "250000 100000\n"})
    assert cgroup_cpu_limit(proc) == 2.5
    # a Kubernetes pod seen from the host: the pod's limit (1.5) is tighter than its container's (none)
    proc = _cgroups(tmp_path / "k8s", "0::/kubepods/pod1/c1\n", [("/", "cg", "cgroup2", "rw")],
                    {"cg/cpu.max": "max 100000\n", "cg/kubepods/cpu.max": "max 100000\n",
                     "cg/kubepods/pod1/cpu.max": "150000 100000\n", "cg/kubepods/pod1/c1/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc) == 1.5
    # no quota anywhere
    proc = _cgroups(tmp_path / "free", "0::/user.slice\n", [("/", "cg", "cgroup2", "rw")],
                    {"cg/cpu.max": "max 100000\n", "cg/user.slice/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc) is None


def test_a_cgroup_v1_quota_is_read_from_the_cpu_controller_s_hierarchy(tmp_path):
    from emolib.machine import cgroup_cpu_limit

    # this machine's layout: v1 controllers and an empty v2 hierarchy (no cpu.max there)
    memberships = "9:name=systemd:/\n4:memory:/x\n1:cpu:/emoq\n0::/\n"
    mounts = [("/", "cpu", "cgroup", "rw,cpu"), ("/", "memory", "cgroup", "rw,memory"),
              ("/", "unified", "cgroup2", "rw")]
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
             "cpu/emoq/cpu.cfs_quota_us": "25000\n", "cpu/emoq/cpu.cfs_period_us": "100000\n",
             "memory/x/cpu.cfs_quota_us": "1000\n", "memory/x/cpu.cfs_period_us": "100000\n"}  # not the cpu controller
    assert cgroup_cpu_limit(_cgroups(tmp_path / "hybrid", memberships, mounts, files)) == 0.25
    # Docker on cgroup v1: the mount's root is the container's own cgroup, the controllers are joined
    proc = _cgroups(tmp_path / "docker", "3:cpu,cpuacct:/docker/abc\n",
                    [("/docker/abc", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct")],
                    {"cpu,cpuacct/cpu.cfs_quota_us": "400000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(proc) == 4.0
    # a cgroup the mount does not show, unreadable files and no /proc at all: no quota known
    proc = _cgroups(tmp_path / "elsewhere", "3:cpu:/other\n", [("/docker/abc", "cpu", "cgroup", "rw,cpu")],
                    {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(proc) is None
    proc = _cgroups(tmp_path / "garbled", "1:cpu:/\n", [("/", "cpu", "cgroup", "rw,cpu")],
                    {"cpu/cpu.cfs_quota_us": "lots\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(proc) is None
    assert cgroup_cpu_limit(tmp_path / "no-proc") is None


UNDER_A_QUOTA = """
import json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
if sys.argv[2] == "torch first":  # a notebook that imports torch before emolib: torch counted the cores
    import torch
import emolib
from emolib import machine
import torch
from emolib.config import get_config
from emolib.train import set_threads
imported = torch.get_num_threads()
set_threads(get_config("tiny").training)
print(json.dumps({"limit": machine.cgroup_cpu_limit(), "cores": machine.available_cores(),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "torch": imported, "after_setup": torch.get_num_threads()}))
"""


@pytest.mark.parametrize("order", ["emolib first", "torch first"])
def test_a_real_cpu_quota_sizes_the_workers_and_torch_s_threads(tmp_path, order):
    """A cgroup (v1, as on this machine) limited to a quarter of a CPU: torch alone would start one
    thread per core of the machine. Needs a writable cgroup v1 cpu hierarchy (root in a container
    that has one), else skipped."""
    root = Path("/sys/fs/cgroup/cpu")
    if os.cpu_count() < 2 or not os.access(root, os.W_OK) or not (root / "cpu.cfs_quota_us").exists():
        pytest.skip("no writable cgroup v1 cpu hierarchy here")
    group = root / f"emolib-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("25000")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "EMOLIB_THREADS")}
        done = subprocess.run([sys.executable, "-c", UNDER_A_QUOTA, str(group), order], capture_output=True,
                              text=True, env=env, timeout=120)
    finally:
        group.rmdir()  # empty again once the process has ended
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # torch loaded first started a thread per core (of the 2 or more here); a run's setup brings it down
    imported = seen.pop("torch")
    assert imported >= 2 if order == "torch first" else imported == 1
    assert seen == {"limit": 0.25, "cores": 1, "omp": "1", "after_setup": 1}
