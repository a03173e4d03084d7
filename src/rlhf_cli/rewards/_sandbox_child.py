"""Sandbox launcher for the ``code`` reward, run as ``python -I -S -B _sandbox_child.py`` by
:mod:`rlhf_cli.rewards.sandbox`. Standard library only; everything here runs before any
untrusted code. Nothing in this file decides a score: the untrusted program only ever reports
values (fd 3), and the parent compares them with expected values it never handed over.

Layout of the processes (``P`` = the trainer):

    P -> launcher (same uid as P, parent namespaces)
           |- map helper (writes uid_map/gid_map of the new user namespace, then exits)
           '- box: PID 1 of fresh user, PID, mount, network, IPC and UTS namespaces
                   root = a read-only tmpfs holding read-only binds of the interpreter and the
                   system libraries only, a small writable tmpfs /tmp, /dev/{null,zero,urandom};
                   no /proc, no /etc, no home; rlimits (AS, CPU, FSIZE, NPROC, NOFILE, CORE);
                   privileges dropped (another uid when P is root, else no capabilities and
                   locked securebits) and no_new_privs; then the untrusted code runs.

The launcher waits for the box with a wall-clock limit and SIGKILLs it at the end whatever
happens; PID 1 of a PID namespace dying takes every process inside with it (the kernel kills
them), so nothing the program started survives. Exit codes: the box's status, or 125 when the
sandbox could not be set up (with one line on stderr naming the missing capability).

Job (JSON on stdin): {"python_paths": [...], "code": str, "steps": [...], "mode": "expr"|"io",
"limits": {...}, "timeout": float, "probe": bool}.
"""
import ctypes
import json
import os
import signal
import sys
import time


def _load_codec():
    """The value codec beside this script, loaded by its file path before anything untrusted runs. The
    folder is never put on sys.path (-I leaves it off): its modules (code.py, ...) would shadow the
    standard library's for the rest of the child and the program under test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_sandbox_values", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_values.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.canon


canon = _load_codec()

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 38, 24, 28
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
BOX_UID = 1000  # uid inside the namespace when the parent is root (mapped to 'nobody')

libc = ctypes.CDLL(None, use_errno=True)


def fail(what):
    sys.stderr.write("sandbox: %s\n" % what)
    sys.stderr.flush()
    os._exit(125)


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        fail("%s failed: %s" % (what, os.strerror(e)))


def mount(src, dst, fstype, flags, data=None):
    enc = (lambda s: s.encode() if s is not None else None)
    check(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          "mount %s" % dst)


def write_maps(pid, euid, egid):
    """Runs in the helper (parent user namespace). Root maps itself and 'nobody' (the box drops to
    it); anyone else can only map itself."""
    if euid == 0:
        uid_map = "0 0 1\n%d 65534 1\n" % BOX_UID
        gid_map = "0 0 1\n%d 65534 1\n" % BOX_UID
    else:
        uid_map, gid_map = "0 %d 1\n" % euid, "0 %d 1\n" % egid
        with open("/proc/%d/setgroups" % pid, "w") as f:
            f.write("deny")
    with open("/proc/%d/uid_map" % pid, "w") as f:
        f.write(uid_map)
    with open("/proc/%d/gid_map" % pid, "w") as f:
        f.write(gid_map)


def enter_namespaces():
    euid, egid = os.geteuid(), os.getegid()
    r, w = os.pipe()
    r2, w2 = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(w)
        os.close(r2)
        os.read(r, 1)
        try:
            write_maps(os.getppid(), euid, egid)
            os.write(w2, b"k")
        except OSError as e:
            os.write(w2, ("user namespace id maps: %s" % e).encode()[:200])
        os._exit(0)
    os.close(r)
    os.close(w2)
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if libc.unshare(flags) != 0:
        e = ctypes.get_errno()
        os.write(w, b"x")
        os.waitpid(helper, 0)
        hint = {28: " (user namespace limit: /proc/sys/user/max_user_namespaces)",
                1: " (unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone, "
                   "kernel.apparmor_restrict_unprivileged_userns or a seccomp policy)"}.get(e, "")
        fail("unshare(user, pid, mount, net namespaces) failed: %s%s" % (os.strerror(e), hint))
    os.write(w, b"x")
    answer = os.read(r2, 256)
    os.waitpid(helper, 0)
    if answer != b"k":
        fail(answer.decode(errors="replace") or "user namespace id maps: helper died")
    return euid == 0


def bind_ro(root, path):
    """Bind ``path`` (file, dir or symlink) read-only at the same place under ``root``."""
    target = root + path
    if os.path.islink(path):  # e.g. /bin -> usr/bin on merged-/usr systems
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    real = os.path.realpath(path)
    if not os.path.exists(real) or os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(real):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "w").close()
    mount(real, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def build_root(newroot, python_paths, tmp_mb):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for p in ("/usr", "/lib", "/lib64", "/lib32", "/bin"):
        if os.path.lexists(p):
            bind_ro(newroot, p)
    for p in python_paths:
        bind_ro(newroot, p)
    for dev in ("null", "zero", "urandom", "random"):
        if os.path.exists("/dev/" + dev):
            bind_dev = newroot + "/dev/" + dev
            os.makedirs(newroot + "/dev", exist_ok=True)
            open(bind_dev, "w").close()
            mount("/dev/" + dev, bind_dev, None, MS_BIND)
    os.makedirs(newroot + "/tmp", exist_ok=True)
    mount("tmpfs", newroot + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % tmp_mb)
    os.makedirs(newroot + "/.old", exist_ok=True)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        fail("pivot_root: unknown architecture %s" % os.uname().machine)
    check(libc.syscall(nr, newroot.encode(), (newroot + "/.old").encode()), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def set_limits(lim):
    import resource

    def lim_(res, v):
        soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            v = min(v, hard)
        resource.setrlimit(res, (v, v))

    if lim.get("memory_bytes"):
        lim_(resource.RLIMIT_AS, lim["memory_bytes"])
    lim_(resource.RLIMIT_CPU, lim["cpu_s"])
    lim_(resource.RLIMIT_FSIZE, lim["fsize"])
    lim_(resource.RLIMIT_CORE, 0)
    lim_(resource.RLIMIT_NOFILE, 64)
    lim_(resource.RLIMIT_NPROC, lim["nproc"])


def drop_privileges(root_parent):
    if root_parent:  # become the namespace's 'nobody': no capabilities, rlimits bind
        os.setgroups([])
        os.setresgid(BOX_UID, BOX_UID, BOX_UID)
        os.setresuid(BOX_UID, BOX_UID, BOX_UID)
    else:  # namespace root mapped to the user: drop every capability for good
        for cap in range(64):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        check(libc.prctl(PR_SET_SECUREBITS, 0x2F | 0xC0, 0, 0, 0), "prctl(securebits)")

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        hdr, data = Header(0x20080522, 0), (Data * 2)()
        check(libc.capset(ctypes.byref(hdr), ctypes.byref(data)), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")


def box_main(job, root_parent):
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:  # no nested user namespaces for the program (less kernel surface); the limit is per namespace
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
    except OSError:
        pass
    build_root(job["newroot"], job["python_paths"], job["limits"]["tmp_mb"])
    set_limits(job["limits"])
    drop_privileges(root_parent)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"})
    if job.get("probe"):
        os.write(3, json.dumps({"probe": os.getuid(), "pid": os.getpid()}).encode())
        os._exit(0)


# ----------------------------------------------------------------- inside the box (untrusted from here)
def run_job(job):
    import io

    out = os.fdopen(3, "w")

    def report(i, **kv):
        try:
            line = json.dumps(dict(i=i, **kv))
        except (TypeError, ValueError):
            line = json.dumps({"i": i, "err": "unserialisable"})
        out.write(line + "\n")
        out.flush()

    code = job["code"]
    if job["mode"] == "io":
        for i, stdin_text in enumerate(job["steps"]):
            buf_in = io.TextIOWrapper(io.BytesIO(stdin_text.encode()), encoding="utf-8")
            buf_out = io.StringIO()
            sys.stdin, sys.stdout = buf_in, buf_out
            try:
                exec(compile(code, "<completion>", "exec"), {"__name__": "__main__"})
            except SystemExit:
                pass
            except BaseException as e:
                sys.stdout = sys.__stdout__
                report(i, err=type(e).__name__)
                continue
            sys.stdin, sys.stdout = sys.__stdin__, sys.__stdout__
            report(i, v=buf_out.getvalue())
        return
    g = {"__name__": "__main__"}
    try:
        exec(compile(code, "<completion>", "exec"), g)
    except BaseException as e:
        sys.stderr.write("completion raised %s: %s\n" % (type(e).__name__, e))
        return
    for kind, i, src in job["steps"]:
        try:
            if kind == "exec":
                exec(compile(src, "<test>", "exec"), g)
            else:
                report(i, v=canon(eval(compile(src, "<test>", "eval"), g)))
        except BaseException as e:
            if kind != "exec":
                report(i, err=type(e).__name__)


def flush_and_exit():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    os._exit(0)


def main_unsafe(job):
    """reward.code.unsafe=true: no namespaces (the user opted out); rlimits and a temp cwd only."""
    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix="rlhf_code_")
    os.chdir(work)
    box = os.fork()
    if box == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        set_limits(job["limits"])
        run_job(job)
        flush_and_exit()
    os.close(3)
    code = wait_box(box, float(job["timeout"]))
    os.chdir("/")
    shutil.rmtree(work, ignore_errors=True)
    os._exit(code)


def wait_box(box, timeout):
    deadline = time.monotonic() + timeout
    status = None
    while True:
        pid, st = os.waitpid(box, os.WNOHANG)
        if pid:
            status = st
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        os.kill(box, signal.SIGKILL)  # also ends every process left in the box's PID namespace
    except ProcessLookupError:
        pass
    if status is None:
        os.waitpid(box, 0)
        sys.stderr.write("sandbox: timed out\n")
        return 124
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main():
    job = json.loads(sys.stdin.read())
    if job["report_fd"] != 3:
        os.dup2(job["report_fd"], 3)
        os.close(job["report_fd"])
    if job.get("unsafe"):
        return main_unsafe(job)
    stdin_null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(stdin_null, 0)
    os.close(stdin_null)
    root_parent = enter_namespaces()
    box = os.fork()  # PID 1 of the new PID namespace
    if box == 0:
        try:
            box_main(job, root_parent)
        except Exception as e:  # setup failed; no untrusted code has run yet
            fail("%s: %s" % (type(e).__name__, e))
        run_job(job)
        flush_and_exit()
    os.close(3)
    os._exit(wait_box(box, float(job["timeout"])))


if __name__ == "__main__":
    main()
