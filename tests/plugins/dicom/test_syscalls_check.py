"""The strace log checker of the durability tests finds each order problem (synthetic logs)."""

from __future__ import annotations

import pytest

from .syscalls import C_STORE_RSP, check_instance, parse

ROOT = "/data/dicom"
SERIES = f"{ROOT}/p1/1.2/1.2.3"
UID = "1.2.3.4"


def _hex(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


RESPONSE = bytes([4, 0]) + b"\x00" * 8 + C_STORE_RSP + UID.encode()
STEPS = {
    "mkdir": f'7 mkdir("{SERIES}", 0777) = 0',
    "mkdir-sync": f"7 fsync(3<{ROOT}/p1/1.2>) = 0",
    "open": f'7 openat(4<{SERIES}>, ".", O_WRONLY|O_CLOEXEC|O_TMPFILE, 0640) = 5<{SERIES}/#99>(deleted)',
    "write": f'7 writev(5<{SERIES}/#99>(deleted), [{{iov_base="\\x00", iov_len=1}}], 1) = 1',
    "fsync": f"7 fsync(5<{SERIES}/#99>(deleted)) = 0",
    "link": f'7 linkat(AT_FDCWD</>, "/proc/self/fd/5", 4<{SERIES}>, "{UID}.dcm", AT_SYMLINK_FOLLOW) = 0',
    "dir-sync": f"7 fsync(4<{SERIES}>) = 0",
    "respond": f'7 sendto(9<socket:[1]>, "{_hex(RESPONSE)}", {len(RESPONSE)}, 0, NULL, 0) = {len(RESPONSE)}',
}
GOOD = ["mkdir", "mkdir-sync", "open", "write", "fsync", "link", "dir-sync", "respond"]


def _problems(order: list[str]) -> list[str]:
    return check_instance(parse("\n".join(STEPS[s] for s in order)), UID, ROOT)[0]


def test_the_durable_order_passes() -> None:
    assert _problems(GOOD) == []


def test_a_call_resumed_later_keeps_its_entry_and_return() -> None:
    split = STEPS["fsync"].replace(") = 0", " <unfinished ...>")
    text = "\n".join([*(STEPS[s] for s in GOOD[:4]), split, "8 write(2<pipe:[2]>, \"x\", 1) = 1",
                      "7 <... fsync resumed>) = 0", *(STEPS[s] for s in GOOD[5:])])
    assert check_instance(parse(text), UID, ROOT)[0] == []


@pytest.mark.parametrize(("order", "problem"), [
    ([s for s in GOOD if s != "fsync"], "was not fsynced"),
    (["mkdir", "mkdir-sync", "open", "fsync", "write", "link", "dir-sync", "respond"], "was not fsynced"),
    ([s for s in GOOD if s != "dir-sync"], "directory was not fsynced"),
    (["mkdir", "mkdir-sync", "open", "write", "fsync", "link", "respond", "dir-sync"], "directory was not fsynced"),
    ([s for s in GOOD if s != "mkdir-sync"], "new directory 1.2.3 was not made durable"),
    (["mkdir", "mkdir-sync", "open", "write", "fsync", "respond", "link", "dir-sync"], "before its file was linked"),
    (GOOD[:-1], "no C-STORE response"),
])
def test_each_missing_or_late_step_is_reported(order: list[str], problem: str) -> None:
    problems = _problems(order)
    assert len(problems) == 1 and problem in problems[0], problems
