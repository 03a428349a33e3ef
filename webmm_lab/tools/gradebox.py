"""The box one submission runs in, for `webmm-lab grade` (see grading.py, which makes the box).

This file runs as a script, from the box's read-only copy of the package, so it needs nothing
of the package (no torch), only the standard library and nbclient:

    python gradebox.py run BOX                  run BOX/work/submission.ipynb, write BOX/result.*
    python gradebox.py kernel BOX -f CONN ...   the kernel's launcher: confine, then exec ipykernel

`run` makes itself the subreaper of everything the kernel starts, runs the notebook cell by cell
(time limits, outputs capped), deletes the grading key once the first cell (the grader's) has
taken it, then ends every process left. `kernel` caps file sizes, drops every capability, and on
Linux with Landlock allows writes only inside BOX/work and reads only of the system, Python and
the box, then becomes ipykernel. BOX/run.json holds the settings grading.py wrote.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

OUTPUT_LIMIT = 1_000_000        # characters of text output in all: past this the run stops
CELL_OUTPUT_LIMIT = 100_000     # characters of one cell's text output: past this it is cut
MESSAGE_LIMIT = 64_000_000      # bytes of every message from the kernel (plots, widgets) in all
FILE_SIZE_LIMIT = 256 << 20     # bytes: no file the kernel writes grows past this
KERNEL_NAME = "webmm-grade"

# Landlock (linux/landlock.h): filesystem rights, network rights, scopes, system calls
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_ABI1 = (1 << 13) - 1                              # execute ... make_sym
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_CAPBSET_DROP = 38, 36, 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# seccomp (linux/seccomp.h, filter.h, audit.h): calls that change a file's owner, mode, times
# or extended attributes, which Landlock does not cover, per architecture; and socket()
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, [90, 91, 92, 93, 94, 132, 188, 189, 190, 197, 198, 199,
                                            235, 260, 261, 268, 280, 425, 452, 463, 466]),
                "aarch64": (0xC00000B7, 198, [5, 6, 7, 14, 15, 16, 52, 53, 54, 55, 88, 425, 452, 463, 466])}
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
RET_ALLOW, RET_ERRNO, EPERM, EACCES = 0x7FFF0000, 0x00050000, 1, 13
AF_INET, AF_INET6, AF_NETLINK, SOCK_STREAM = 2, 10, 16, 1
SYSTEM_READ = ["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys"]
DEVICES = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The Landlock version this kernel offers (0: none, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        abi = _libc().syscall(ctypes.c_long(SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                              ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def _add_rule(libc: ctypes.CDLL, ruleset: int, kind: int, attr: bytes) -> None:
    buf = ctypes.create_string_buffer(attr, len(attr))
    if libc.syscall(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(kind), buf,
                    ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), f"landlock_add_rule: {os.strerror(ctypes.get_errno())}")


def _allow_path(libc: ctypes.CDLL, ruleset: int, path: str, access: int, handled: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:                                 # not on this system: nothing to allow
        return
    try:
        allowed = access & handled & (FS_FILE_ONLY if not os.path.isdir(path) else -1)
        _add_rule(libc, ruleset, RULE_PATH_BENEATH, struct.pack("=Qi", allowed, fd))
    finally:
        os.close(fd)


def confine(rules: list[tuple[str, int]], tcp_ports: list[int]) -> bool:
    """Restrict this process and all it starts, for good, with Landlock: files only as `rules`
    allow (path, rights), TCP only bound to `tcp_ports` and never connected, no signals to
    processes outside. False where Landlock is missing (nothing is restricted)."""
    abi = landlock_abi()
    if abi < 1:
        return False
    libc = _libc()
    fs = FS_ABI1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0) \
        | (FS_IOCTL_DEV if abi >= 5 else 0)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)[:24 if abi >= 6 else 16 if abi >= 4 else 8]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(ctypes.c_long(SYS_CREATE_RULESET), buf, ctypes.c_size_t(len(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    for path, access in rules:
        _allow_path(libc, ruleset, path, access, fs)
    for port in tcp_ports if net else []:
        _add_rule(libc, ruleset, RULE_NET_PORT, struct.pack("=QQ", NET_BIND_TCP, port))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.syscall(ctypes.c_long(SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)
    return True


def kernel_rules(box: Path) -> list[tuple[str, int]]:
    """What the grading kernel may touch: read the system, Python and its packages, the box's
    copy of the package, its connection file and the key; read and write only BOX/work."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(sys.executable).resolve().parent.parent)}
    python |= {sysconfig.get_path(p) for p in ("stdlib", "platstdlib", "purelib", "platlib")}
    python |= {os.path.realpath(p) for p in python}
    python -= {"/", ""}                                 # a Python in /bin: its files are in /usr
    rules = [(p, FS_READ) for p in sorted(python) + SYSTEM_READ]
    rules += [(d, FS_READ_FILE | FS_WRITE_FILE) for d in DEVICES]
    rules += [(str(box / p), FS_READ) for p in ("pkg", "runtime", "key")]
    return rules + [(str(box / "work"), -1)]


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_syscalls() -> bool:
    """A seccomp filter, for good: changing a file's owner, mode, times or extended attributes
    does nothing (it reports success: Landlock cannot forbid these outside the box, and code
    that copies files with their modes keeps working); io_uring is refused; socket() makes
    only TCP sockets (no UDP, no Unix, no raw). False where not available (nothing filtered)."""
    import platform
    if not sys.platform.startswith("linux") or platform.machine() not in SECCOMP_ARCH:
        return False
    arch, socket_nr, quiet = SECCOMP_ARCH[platform.machine()]
    ld, jeq, jge, ret, and_ = 0x20, 0x15, 0x35, 0x06, 0x54
    prog = [_bpf(ld, 4), _bpf(jeq, arch, 1, 0), _bpf(ret, RET_ERRNO | EPERM),    # other ABIs: no
            _bpf(ld, 0), _bpf(jge, 0x40000000, 0, 1), _bpf(ret, RET_ERRNO | EPERM)]  # x32: no
    for nr in quiet:
        prog += [_bpf(jeq, nr, 0, 1), _bpf(ret, RET_ERRNO | (EPERM if nr == 425 else 0))]
    prog += [_bpf(jeq, socket_nr, 1, 0), _bpf(ret, RET_ALLOW),
             _bpf(ld, 16), _bpf(jeq, AF_NETLINK, 6, 0),                             # family
             _bpf(jeq, AF_INET, 1, 0), _bpf(jeq, AF_INET6, 0, 3),
             _bpf(ld, 24), _bpf(and_, 0xF), _bpf(jeq, SOCK_STREAM, 1, 0),             # type
             _bpf(ret, RET_ERRNO | EACCES), _bpf(ret, RET_ALLOW)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    code = b"".join(prog)
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
            PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Prog(len(prog), code)), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"seccomp: {os.strerror(ctypes.get_errno())}")
    return True


def drop_capabilities() -> None:
    """Give up every capability for good (a root grader's kernel keeps uid 0 but no power
    beyond a file's owner); nothing to do for an ordinary user."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return
    libc = _libc()
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("=Ii", 0x20080522, 0)       # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)                                 # effective, permitted, inheritable: none
    if libc.capset(ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24)) != 0:
        raise OSError(ctypes.get_errno(), f"capset: {os.strerror(ctypes.get_errno())}")


def kernel_main(box: Path, args: list[str]) -> None:
    """The grading kernel's launcher: cap file sizes, drop capabilities, confine, become ipykernel."""
    import resource                             # POSIX only: imported here so Windows can import this file
    conn = json.loads(Path(args[args.index("-f") + 1]).read_text())
    ports = [int(conn[k]) for k in conn if k.endswith("_port")] if conn.get("transport") == "tcp" else []
    ports.append(0)             # an ephemeral port: ipykernel's pipe for its subprocesses' output
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    drop_capabilities()
    wanted = json.loads((box / "run.json").read_text())["confine"]      # must, may or no
    if wanted != "no":
        if not confine(kernel_rules(box), ports) and wanted == "must":
            raise SystemExit("gradebox: Landlock is not available, and the grader asked for it")
        filter_syscalls()
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args])


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def end_descendants() -> int:
    """Kill every process this one started, directly or not, and reap them: as the subreaper,
    this process inherits each orphan, even one that left the kernel's session. Returns how many."""
    ended: set[int] = set()
    for _ in range(200):
        kids = _children(os.getpid()) if os.path.isdir("/proc") else []
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                ended.add(pid)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not kids:
                return len(ended)
        time.sleep(0.02)
    return len(ended)


def _text_size(msg: dict) -> int:
    content = msg.get("content", {})
    parts = [content.get("text", ""), content.get("data", {}).get("text/plain", ""),
             content.get("evalue", ""), *content.get("traceback", [])]
    return sum(len(p) if isinstance(p, str) else len(json.dumps(p)) for p in parts)


class OutputFlood(RuntimeError):
    """A notebook printed more than OUTPUT_LIMIT characters of text, or sent more than
    MESSAGE_LIMIT bytes of output in all."""


def capped_client(nb, km, spec: dict):
    """An nbclient NotebookClient whose outputs are capped: only their text is kept (grading
    reads nothing else), each cell's past CELL_OUTPUT_LIMIT characters is dropped (with a note),
    and past OUTPUT_LIMIT characters of text, or MESSAGE_LIMIT bytes of any output, the run stops."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    class Capped(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            content = msg.get("content", {})
            self.bytes += len(json.dumps(content, default=str)) + sum(map(len, msg.get("buffers") or []))
            if self.bytes > MESSAGE_LIMIT:
                raise OutputFlood(f"stopped: output over {MESSAGE_LIMIT / 1e6:g} MB in all")
            if msg.get("msg_type") in ("display_data", "execute_result", "update_display_data"):
                data = content.get("data") or {}                    # plots, HTML: dropped
                content["data"] = {k: v for k, v in data.items() if k == "text/plain"}
            return super().process_message(msg, cell, cell_index)

        def output(self, outs, msg, display_id, cell_index):
            size = _text_size(msg)
            self.total += size
            if self.total > OUTPUT_LIMIT:
                raise OutputFlood(f"stopped: text output over {OUTPUT_LIMIT / 1e6:g} MB in all")
            before = self.per_cell.get(cell_index, 0)
            self.per_cell[cell_index] = before + size
            if before + size <= CELL_OUTPUT_LIMIT:
                return super().output(outs, msg, display_id, cell_index)
            if before <= CELL_OUTPUT_LIMIT:
                outs.append(new_output("stream", name="stderr", text="[grader: output cut here]\n"))
            return None

    client = Capped(nb, km=km, timeout=int(spec["limit"]), allow_errors=True, shutdown_kernel="immediate",
                    resources={"metadata": {"path": str(Path(spec["box"]) / "work")}})
    client.total, client.bytes, client.per_cell = 0, 0, {}
    client.owns_km = True                   # so that nbclient shuts this kernel down at the end
    client.reset_execution_trackers()
    return client


def _state_of_first_cell(cell, box: Path) -> str | None:
    """After the grader's first cell: the key must have been taken; delete its file now."""
    (box / "key").unlink(missing_ok=True)
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        e = errors[0]
        return f"the course's checks did not load: {e.get('ename')}: {str(e.get('evalue'))[:100]}"
    return None


def execute(client, nb, box: Path, spec: dict) -> str:
    """Run every cell in order within the limits; the state of the run ('ok', 'timed out ...').
    Cell 0 is the grader's, so cell i is the student's i-th cell, counting from 1."""
    from nbclient.exceptions import CellTimeoutError
    t0, limit = time.perf_counter(), float(spec["limit"])
    for i, cell in enumerate(nb.cells):
        left = limit - (time.perf_counter() - t0)
        if left <= 0:
            return f"timed out after {limit:.0f} s (before cell {i})"
        cell_limit = left if i == 0 else min(left, float(spec["cell_limit"]))
        client.timeout = max(1, int(cell_limit))
        try:
            client.execute_cell(cell, i, execution_count=client.code_cells_executed + 1)
        except CellTimeoutError:
            return f"timed out: cell {i} ran past {client.timeout} s" if cell_limit < left \
                else f"timed out after {limit:.0f} s"
        if i == 0 and (bad := _state_of_first_cell(cell, box)):
            return bad
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        return f"raised {errors[0].get('ename', 'an error')} ({len(errors)} cell(s) with errors)"
    return "ok"


def kernel_manager(box: Path):
    """An (asynchronous, as nbclient needs) KernelManager whose kernel is this file's `kernel`
    launcher."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    spec_dir = box / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-I", str(Path(__file__).resolve()), "kernel", str(box), "-f", "{connection_file}",
            "--HistoryManager.hist_file=:memory:"]
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "webmm-lab grading", "language": "python"}))
    return AsyncKernelManager(kernel_name=KERNEL_NAME, connection_file=str(box / "runtime" / "kernel.json"),
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(box / "kernels")]))


def _stopped(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")     # so that run_main's cleanup runs


def run_main(box: Path) -> None:
    """Run the box's notebook and write BOX/result.ipynb and BOX/result.json (state, seconds,
    processes ended); never raises for anything the notebook does. Stopped with SIGTERM, it
    still ends every process the kernel left."""
    import nbformat
    from nbclient.exceptions import DeadKernelError
    if sys.platform.startswith("linux"):
        _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, _stopped)
    spec = json.loads((box / "run.json").read_text())
    nb = nbformat.read(box / "work" / "submission.ipynb", as_version=4)
    env = {**spec["env"], "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    t0, state = time.perf_counter(), "ok"
    client = capped_client(nb, kernel_manager(box), spec)
    try:
        with open(box / "kernel.log", "wb") as log:
            with client.setup_kernel(env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log):
                state = execute(client, nb, box, spec)
    except OutputFlood as e:
        state = str(e)
    except DeadKernelError:
        state = "kernel died"
    except Exception as e:                      # a kernel that never started, a malformed cell
        state = f"could not run: {type(e).__name__}: {str(e)[:100]}"
    finally:
        (box / "key").unlink(missing_ok=True)
        ended = end_descendants()
    nbformat.write(nb, box / "result.ipynb")
    (box / "result.json").write_text(json.dumps(
        {"state": state, "seconds": time.perf_counter() - t0, "processes_ended": ended}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        run_main(Path(sys.argv[2]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "kernel":
        kernel_main(Path(sys.argv[2]), sys.argv[3:])
    else:
        raise SystemExit(__doc__)
