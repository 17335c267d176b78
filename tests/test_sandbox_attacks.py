"""The sandbox, attacked as a policy would attack it: each attack is model-written code run through the `python` tool
(envs.python_tool.run_python), real processes, no mocks. Isolation attacks run twice: in the sandbox they fail, and
with env.sandbox=none (a plain child process, the same code) they succeed, so no test passes vacuously. The limit
attacks (processes, disk, output, memory) hold in the sandbox; where the unisolated child has no such bound, the
control shows the attack is real."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from envs.python_tool import run_python
from envs.sandbox import Limits, open_sandbox

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits(wall_s=10, cpu_s=5)


@pytest.fixture(scope="module")
def boxes():
    return {"bwrap": open_sandbox("bwrap"), "none": open_sandbox("none")}


def attack(boxes, backend: str, code: str, limits: Limits = LIMITS) -> str:
    return run_python(code, boxes[backend], limits, max_output_chars=100_000)


@pytest.fixture
def victim():
    """A process of the user's, standing for the trainer and its other jobs."""
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


ISOLATED = {"bwrap": True, "none": False}


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_files_outside_cannot_be_read_written_or_deleted(boxes, backend, tmp_path):
    secret = tmp_path / "home" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_text("CANARY-KEY")
    target = tmp_path / "checkpoint.safetensors"
    target.write_text("WEIGHTS")
    doomed = tmp_path / "config.yaml"
    doomed.write_text("run config")
    read = attack(boxes, backend, f"print(open({str(secret)!r}).read())")
    project = attack(boxes, backend, f"print(open({str(REPO / 'pyproject.toml')!r}).read()[:40])")
    write = attack(boxes, backend, f"open({str(target)!r}, 'w').write('POISON'); print('written')")
    delete = attack(boxes, backend, f"import os; os.remove({str(doomed)!r}); print('deleted')")
    if ISOLATED[backend]:
        assert "CANARY-KEY" not in read and "error:" in read
        assert "[build-system]" not in project and "error:" in project
        assert target.read_text() == "WEIGHTS" and "error:" in write
        assert doomed.exists() and "error:" in delete
    else:
        assert "CANARY-KEY" in read and "[build-system]" in project
        assert target.read_text() == "POISON" and not doomed.exists()


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_the_venv_cannot_be_planted_with_code(boxes, backend, tmp_path):
    """A .pth in site-packages runs in every later python of the venv: here a copy of the venv's layout stands for
    it (planting in the real venv under `none` would infect the test run itself)."""
    site = tmp_path / "venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    planted = site / "evil.pth"
    out = attack(boxes, backend, f"open({str(planted)!r}, 'w').write('import os'); print('planted')")
    assert planted.exists() is not ISOLATED[backend], out
    real_site = Path(os.__file__).parent  # the runtime's own folder is mounted, read-only
    out = attack(boxes, "bwrap", f"open({str(real_site / f'evil-{uuid.uuid4().hex}.pth')!r}, 'w')")
    assert "Read-only file system" in out or "Permission denied" in out


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_the_trainer_environment_stays_secret(backend):
    """The trainer started with tokens in its environment (as a job's are): the tool's code looks in its own and in
    every /proc/<pid>/environ it can read."""
    code = """
import os
found = [os.environ.get("HF_TOKEN", "")]
for pid in os.listdir("/proc"):
    try: found.append(open(f"/proc/{pid}/environ", "rb").read().decode("latin-1"))
    except OSError: pass
print("\\n".join(found))
"""
    trainer = ("import sys; from envs.sandbox import open_sandbox; from envs.python_tool import run_python; "
               "print(run_python(sys.stdin.read(), open_sandbox(sys.argv[1]), max_output_chars=10**6))")
    out = subprocess.run([sys.executable, "-c", trainer, backend], input=code, capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "HF_TOKEN": "hf_CANARYTOKEN", "WANDB_API_KEY": "CANARYWANDB"},
                         timeout=60).stdout
    leaked = "hf_CANARYTOKEN" in out and "CANARYWANDB" in out
    assert leaked is not ISOLATED[backend], out[-300:]


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_no_network_not_even_the_hosts_loopback(boxes, backend):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    received = []

    def accept():
        try:
            connection, _ = listener.accept()
            received.append(connection.recv(100))
            connection.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    port = listener.getsockname()[1]
    out = attack(boxes, backend, f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=3); "
                                 "s.sendall(b'SECRET'); print('sent')")
    thread.join()  # accept() waits up to 5 s: the connection, if one came, is taken before the listener closes
    listener.close()
    assert (received == [b"SECRET"]) is not ISOLATED[backend], out


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_other_processes_cannot_be_seen_or_signalled(boxes, backend, victim):
    listed = attack(boxes, backend, "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert (str(victim.pid) in listed) is not ISOLATED[backend]
    out = attack(boxes, backend, f"import os, signal; os.kill({victim.pid}, signal.SIGKILL); print('killed')")
    time.sleep(0.2)
    assert (victim.poll() is None) is ISOLATED[backend], out


def test_killing_everything_it_can_reach_kills_only_the_sandbox(boxes, victim):
    """`kill -9 -1` and kill(getppid()): under `none` they would reach every process of the user (as root: the
    machine), so only the sandbox runs them; the victim and this process live on."""
    out = attack(boxes, "bwrap", "import os, signal; os.kill(os.getppid(), signal.SIGKILL); os.kill(-1, signal.SIGKILL)")
    out2 = attack(boxes, "bwrap", "import subprocess; subprocess.run(['kill', '-9', '-1'])")
    assert victim.poll() is None, (out, out2)
    assert attack(boxes, "bwrap", "print('still serving')") == "still serving\n"


def _alive(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_a_double_forked_daemon_does_not_outlive_the_call(boxes, backend):
    seconds = f"{77 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a sleep nobody else runs
    code = f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{seconds}"])
    os._exit(0)
print("daemon started")
"""
    started = time.perf_counter()
    out = attack(boxes, backend, code)
    elapsed = time.perf_counter() - started
    time.sleep(0.3)
    survivors = _alive(f"sleep {seconds}")
    for pid in survivors:
        os.kill(int(pid), signal.SIGKILL)
    assert bool(survivors) is not ISOLATED[backend], out
    assert elapsed < 5  # a grandchild holding the pipes open does not hold the call


FORK_COUNT = """
import os, time
children = 0
try:
    for _ in range({n}):
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        children += 1
except OSError as error:
    print(f"fork failed after {{children}}: {{error}}")
print(f"children {{children}}")
"""


def test_a_fork_bomb_is_bounded(boxes):
    limits = Limits(wall_s=10, processes=16)
    out = attack(boxes, "bwrap", FORK_COUNT.format(n=200), limits)
    children = int(out.split("children ")[-1].split()[0])
    assert children < 16 and "fork failed" in out
    assert attack(boxes, "bwrap", "print('the machine goes on')") == "the machine goes on\n"
    control = attack(boxes, "none", FORK_COUNT.format(n=40), limits)  # no process bound there: all 40 start
    assert "children 40" in control


def test_the_disk_bound_holds_and_nothing_stays(boxes):
    limits = Limits(wall_s=20, tmp_mb=16)
    code = """
import os
written = 0
try:
    for i in range(64):
        with open(f"/tmp/fill{i}", "wb") as f:
            f.write(b"x" * (1 << 20))
        written += 1
except OSError as error:
    print(type(error).__name__, error.errno)
print("files", written)
"""
    out = attack(boxes, "bwrap", code, limits)
    assert "files 1" in out and int(out.split("files ")[-1].split()[0]) < 16 and "OSError 28" in out  # ENOSPC
    assert attack(boxes, "bwrap", "import os; print(os.listdir('/tmp'))", limits) == "['main.py']\n"  # a fresh /tmp
    control = attack(boxes, "none", code.replace("/tmp/", ""), limits)  # its temporary folder on the real disk
    assert "files 64" in control


def test_endless_output_is_cut_and_memory_stays_flat(boxes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = attack(boxes, "bwrap", "import sys\nwhile True: sys.stdout.write('x' * 65536)", Limits(wall_s=30))
    elapsed = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "printed more than" in out and elapsed < 5 and grown_mb < 50


def test_a_huge_allocation_is_a_memory_error(boxes):
    out = attack(boxes, "bwrap", "b = bytearray(10 * 1024 ** 3); print(len(b))")
    assert "MemoryError" in out and "512 MB" in out


def test_every_writable_place_is_a_bounded_tmpfs(boxes):
    """Memory-backed folders fill the host's RAM as surely as a disk: only /tmp and /dev/shm take writes, each
    bounded; the runtime (its hidden site-packages included), /dev and / are read-only."""
    out = attack(boxes, "bwrap", """
import os, sys
for folder in ["/", "/dev", "/usr", sys.prefix, f"{sys.prefix}/lib/python3.{sys.version_info[1]}/site-packages"]:
    try:
        open(os.path.join(folder, "w"), "w").write("x"); print("WRITABLE", folder)
    except OSError as error:
        print("refused", folder, error.errno)
for folder in ["/tmp", "/dev/shm"]:
    try:
        for i in range(80):
            open(os.path.join(folder, f"fill{i}"), "wb").write(b"x" * (1 << 20))
    except OSError as error:
        print("bounded", folder, error.errno)
""", Limits(wall_s=20, tmp_mb=32))
    assert "WRITABLE" not in out and out.count("refused") == 5, out
    assert "bounded /tmp 28" in out and "bounded /dev/shm 28" in out, out
