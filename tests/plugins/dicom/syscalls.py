"""Read an ``strace -f`` log of `vethub run` and check, per acknowledged instance, that its
file was fsynced, linked (or renamed) into place and its directory fsynced before the C-STORE
response carrying its SOP Instance UID was written to the socket.

Only the kernel's view is used: no hub code is patched or observed from inside. The log is
written with ``-y`` (paths of file descriptors) and ``-x`` (strings in hex), so a descriptor
names the file or directory it is open on and a buffer can be decoded to the bytes sent.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

SYSCALLS = (
    "openat,mkdir,mkdirat,fsync,fdatasync,linkat,renameat,renameat2,rename,"
    "write,writev,sendto,sendmsg,clone,clone3,fork,vfork"
)
LINKS = {"linkat", "renameat", "renameat2", "rename"}
SYNCS = {"fsync", "fdatasync"}
SENDS = {"write", "writev", "sendto", "sendmsg"}
WRITES = {"write", "writev", "pwrite64", "pwritev", "pwritev2"}

# (0000,0100) Command Field = 0x8001, C-STORE-RSP, in the command set's implicit VR little endian.
C_STORE_RSP = b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x80"
P_DATA_TF = 0x04


def strace_command(log: str, argv: Sequence[str]) -> list[str]:
    """``strace`` following every thread and child process of ``argv`` into ``log``."""
    return ["strace", "-f", "--seccomp-bpf", "-y", "-x", "-s", "1024", "-qq", "-o", log,
            "-e", f"trace={SYSCALLS}", "--", *argv]


@dataclass
class Call:
    tid: int
    name: str
    args: str
    result: str
    start: int  # line of the call's entry in the log (order of events)
    end: int  # line of its return

    @property
    def ok(self) -> bool:
        return not self.result.startswith("-1")


_FULL = re.compile(r"^(\d+) +(\w+)\((.*)\) += (.*)$")
_UNFINISHED = re.compile(r"^(\d+) +(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)\) += (.*)$")
_FD = re.compile(r"^\s*(-?\d+|AT_FDCWD)<([^>]*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[Call]:
    calls: list[Call] = []
    pending: dict[int, tuple[str, str, int]] = {}
    for n, line in enumerate(text.splitlines()):
        if m := _FULL.match(line):
            calls.append(Call(int(m[1]), m[2], m[3], m[4], n, n))
        elif m := _UNFINISHED.match(line):
            pending[int(m[1])] = (m[2], m[3], n)
        elif (m := _RESUMED.match(line)) and int(m[1]) in pending:
            name, head, start = pending.pop(int(m[1]))
            calls.append(Call(int(m[1]), name, head + m[3], m[4], start, n))
    return sorted(calls, key=lambda c: c.start)


def fd_of(text: str) -> tuple[str, str] | None:
    """(descriptor, path) of the leading ``fd<path>`` of ``text`` (args or a result)."""
    m = _FD.match(text)
    return (m[1], m[2]) if m else None


def strings(args: str) -> list[bytes]:
    return [codecs.escape_decode(s.encode("latin-1"))[0] for s in _STRING.findall(args)]


def processes(calls: Iterable[Call]) -> dict[int, int]:
    """Thread id -> process id, from the clone/fork calls in the log."""
    owner: dict[int, int] = {}
    for call in calls:
        owner.setdefault(call.tid, call.tid)
        if call.name in {"clone", "clone3", "fork", "vfork"} and call.result.isdigit():
            child = int(call.result)
            owner[child] = owner[call.tid] if "CLONE_THREAD" in call.args else child
    return owner


@dataclass(frozen=True)
class Placed:
    """One instance's file put in place: the link or rename, and where."""

    call: Call
    directory: str
    source: str  # "/proc/self/fd/N" (unnamed file) or the temporary file's name


def _placement(call: Call, name: str) -> Placed | None:
    if call.name not in LINKS or not call.ok:
        return None
    if call.name == "rename":
        src, dst = (s.decode() for s in strings(call.args)[:2])
        path = PurePosixPath(dst)
        return Placed(call, str(path.parent), src) if path.name == name else None
    # linkat/renameat(2): olddirfd, "old", newdirfd, "new"[, flags]
    parts = strings(call.args)
    new_dir = call.args.split(",", 2)[2]
    target = fd_of(new_dir)
    if len(parts) < 2 or target is None or parts[1].decode() != name:
        return None
    return Placed(call, target[1], parts[0].decode())


def c_store_response(buffer: bytes, uid: str) -> bool:
    """A P-DATA-TF carrying a C-STORE-RSP for ``uid``."""
    return bool(buffer) and buffer[0] == P_DATA_TF and C_STORE_RSP in buffer and uid.encode() in buffer


def check_instance(
    calls: Sequence[Call], uid: str, root: str,
    acknowledges: Callable[[bytes, str], bool] = c_store_response,
) -> tuple[list[str], Placed | None]:
    """The order problems for the instance ``uid`` stored under ``root`` (none: its file was
    durable before the first write or send that ``acknowledges`` it)."""
    responses = [
        c for c in calls if c.name in SENDS and c.ok
        and any(acknowledges(b, uid) for b in strings(c.args))
    ]
    if not responses:
        return [f"{uid}: no C-STORE response seen"], None
    response = responses[0]
    placed = [p for c in calls if c.end < response.start and (p := _placement(c, f"{uid}.dcm"))]
    if not placed:
        return [f"{uid}: acknowledged before its file was linked or renamed into place"], None
    place = placed[-1]
    problems = []
    if not _file_synced_before(calls, place):
        problems.append(f"{uid}: its file was not fsynced (after its last write) before {place.call.name}")
    if not any(
        c.name in SYNCS and c.ok and (fd_of(c.args) or ("", ""))[1] == place.directory
        and place.call.end < c.start and c.end < response.start
        for c in calls
    ):
        problems.append(f"{uid}: its directory was not fsynced between {place.call.name} and the response")
    problems += [f"{uid}: {p}" for p in _new_directories_unsynced(calls, place, response, root)]
    return problems, place


def _file_synced_before(calls: Sequence[Call], place: Placed) -> bool:
    link = place.call
    mine = [c for c in calls if c.tid == link.tid and c.end < link.start]
    if place.source.startswith("/proc/self/fd/"):
        fd = place.source.rsplit("/", 1)[1]
        opened = [c for c in mine if c.name == "openat" and (fd_of(c.result) or ("",))[0] == fd]
        if not opened:
            return False
        after = [c for c in mine if c.start > opened[-1].end and (fd_of(c.args) or ("",))[0] == fd]
    else:  # a named temporary file in the same directory
        temp = f"{place.directory}/{PurePosixPath(place.source).name}"
        after = [c for c in mine if (fd_of(c.args) or ("", ""))[1] == temp]
    syncs = [c for c in after if c.name in SYNCS and c.ok]
    return bool(syncs) and not any(c.name in WRITES and c.start > syncs[-1].end for c in after)


def _new_directories_unsynced(
    calls: Sequence[Call], place: Placed, response: Call, root: str
) -> list[str]:
    """Each directory under the storage root on the instance's path that was made by mkdir
    must have had its parent fsynced before the response, or the new entry (and the file
    under it) may vanish in a crash. (The root itself is made once, at start-up.)"""
    directory = PurePosixPath(place.directory)
    ancestors = {str(p) for p in [directory, *directory.parents] if p.is_relative_to(root) and str(p) != root}
    problems = []
    for made in calls:
        if made.name not in {"mkdir", "mkdirat"} or not made.ok or made.start > response.start:
            continue
        parts = strings(made.args)
        if made.name == "mkdir":
            path = PurePosixPath(parts[0].decode())
        else:
            base = fd_of(made.args)
            path = PurePosixPath(base[1] if base else "/") / parts[0].decode()
        if str(path) not in ancestors:
            continue
        parent = str(path.parent)
        if not any(
            c.name in SYNCS and c.ok and (fd_of(c.args) or ("", ""))[1] == parent
            and made.end < c.start and c.end < response.start
            for c in calls
        ):
            problems.append(f"the new directory {path.name} was not made durable (parent fsync)")
    return problems
