"""Operating-system confinement applied inside the sandbox child, through ctypes.

Every layer is best-effort: a kernel or container without it makes the layer report itself
inactive instead of failing. Nothing here imports torch or any grader module with secrets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 and aarch64 share these numbers (Landlock came after the generic syscall table).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

NOBODY_UID = 65534
READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


def _fs_rights_for_abi(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(number: int, *args: object) -> int:
    return int(_libc.syscall(ctypes.c_long(number), *args))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    abi = _syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(abi, 0)


@dataclass
class Layers:
    """Which layers one child actually applied, with a word on each for the logs."""

    applied: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, ok: bool, note: str) -> None:
        self.applied[name] = ok
        self.notes[name] = note


def python_read_paths() -> list[str]:
    """The interpreter, the stdlib, site-packages and the grader package: all read-only.

    Other sys.path entries are left out on purpose: `python -m` puts the working directory
    there, and a checkout's root holds the data directory next to the code."""
    import site

    import grader

    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    candidates = set(prefixes) | {str(Path(grader.__file__).resolve().parent)}
    for entry in [*sys.path, *site.getsitepackages()]:
        real = os.path.realpath(entry) if entry else ""
        if real and real != "/" and any(_within(real, p) for p in prefixes if p != "/"):
            candidates.add(real)
    for system in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
                   "/etc/ld.so.cache", "/proc/cpuinfo", "/sys/devices/system/cpu"):
        candidates.add(system)
    return sorted(c for c in candidates if os.path.exists(c))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def cuda_device_paths() -> tuple[list[str], list[str]]:
    """(read-only, read-write) paths a CUDA context needs. The driver opens its own
    /proc/self entries for writing with O_TRUNC (measured on an H200: without write and
    truncate there, cudaGetDeviceCount fails with error 304)."""
    read = [p for p in ("/proc/driver/nvidia", "/sys") if os.path.exists(p)]
    read += [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if os.path.isdir(p)]
    rw = [f"/dev/{n}" for n in sorted(os.listdir("/dev")) if n.startswith("nvidia")]
    return read, [*rw, "/proc/self"]


def apply_landlock(read_paths: Iterable[str], rw_dev_paths: Iterable[str] = ()) -> str:
    """Restrict this process to reading `read_paths`; no writes, no TCP. Returns a note."""
    abi = landlock_abi()
    if abi <= 0:
        raise OSError("Landlock is not available in this kernel")
    fs_rights = _fs_rights_for_abi(abi)
    attr = _RulesetAttr(handled_access_fs=fs_rights)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    size = ctypes.sizeof(_RulesetAttr) if abi >= 4 else 8
    ruleset = _syscall(
        SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        # The rights that apply to a file (directory-only rights on a file are EINVAL).
        file_rights = FS_EXECUTE | FS_READ_FILE | FS_WRITE_FILE | (fs_rights & FS_TRUNCATE)
        file_rights |= fs_rights & FS_IOCTL_DEV
        dev_rights = (
            READ_ONLY | FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
            | (FS_IOCTL_DEV if abi >= 5 else 0)
        )
        rules = [(p, READ_ONLY) for p in read_paths] + [(p, dev_rights) for p in rw_dev_paths]
        for path, rights in rules:
            _add_path_rule(ruleset, path, rights, file_rights)
        if _syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    net = "no TCP" if abi >= 4 else "TCP not covered below ABI 4"
    return f"ABI {abi}: read-only Python/torch paths, no writes, {net}"


def _add_path_rule(ruleset: int, path: str, rights: int, file_mask: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= file_mask  # directory-only rights on a file are EINVAL
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if _syscall(
            SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(rule), ctypes.c_uint32(0),
        ) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
    finally:
        os.close(fd)


def unshare_network() -> str:
    """A new, empty network namespace: no interface but a down loopback."""
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) refused")
    return "empty network namespace" + ("" if flags == CLONE_NEWNET else " (via a user namespace)")


def set_no_new_privs() -> str:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    return "set: no setuid/file-capability gains"


def die_with_parent() -> None:
    """SIGKILL this process when the fork server dies, so no orphan keeps computing."""
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def drop_privileges(uid: int = NOBODY_UID, gid: int = NOBODY_UID) -> str:
    if os.geteuid() != 0:
        return f"already unprivileged (uid {os.geteuid()})"
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    return f"uid {uid}, gid {gid}, no supplementary groups"


def virtual_size_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def apply_rlimits(*, memory_cap_bytes: int | None, max_open_files: int = 64) -> str:
    """Nothing written (FSIZE 0), no core dumps, few descriptors, and an address-space cap
    of the current size + the memory budget (torch is already mapped, so only the model's
    own allocations count)."""
    # Ignoring SIGXFSZ turns a write past the limit into an EFBIG error a model's torch.save
    # reports, instead of a silent kill.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max_open_files if hard == resource.RLIM_INFINITY else min(max_open_files, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    note = f"FSIZE 0, CORE 0, NOFILE {limit}"
    if memory_cap_bytes is not None:
        cap = virtual_size_bytes() + memory_cap_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        note += f", AS {cap >> 20} MiB"
    return note
