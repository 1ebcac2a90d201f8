#!/usr/bin/env python3
"""Mutation testing of the modules whose guarantees matter most, with cosmic-ray (not in CI).

Each target is mutated in a copy of the committed tree (``git archive HEAD``), never in the
working tree, and its mutants are run against the tests that should catch them, on SQLite
only, within a time budget. Survivors are written to ``<out>/<target>.txt`` with their diffs;
docs/testing.md lists the ones left on purpose and why.

    .venv/bin/pip install -e '.[test,mutation]'
    .venv/bin/python tools/mutation.py                        # every target, 20 min each
    .venv/bin/python tools/mutation.py storage --budget 600 --sample 0.5 --seed 7

``--sample`` runs a random share of the mutants (the rest are marked skipped, seeded, so a
rerun with the same seed runs the same ones); ``--budget`` stops a target after that many
seconds, leaving the remaining mutants pending in its session file, where ``cosmic-ray exec
<config> <session>`` (run in the copy) can resume them.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """A module to mutate, with the tests (and -k selection) that must catch its mutants."""
    module: str
    tests: tuple[str, ...]
    select: str  # pytest -k expression

    def command(self, python: str) -> str:
        tests = " ".join(self.tests)
        return f'{python} -m pytest -x -q -p no:cacheprovider -k "{self.select}" {tests}'


SQLITE = "not postgresql"
TARGETS = {
    "jobs": Target(
        "hub/jobs.py", ("tests/hub/test_jobs.py", "tests/hub/test_jobs_batch.py"),
        # the worker-process tests take minutes on a loaded machine (they run in the suite)
        f"{SQLITE} and not cli and not sigkill and not sigterm and not process",
    ),
    "storage": Target(
        "plugins/dicom/storage.py",
        ("tests/plugins/dicom/test_dicom_storage.py", "tests/plugins/dicom/test_dicom_storage_errors.py",
         "tests/plugins/dicom/test_dicom_robustness.py", "tests/plugins/dicom/test_dicom_durability.py"),
        f"{SQLITE} and not two-processes and not pynetdicom-engine",
    ),
    "verdict": Target(
        "hub/messaging/verdict.py",
        ("tests/hub/messaging/test_verdict.py", "tests/hub/messaging/test_verdict_values.py",
         "tests/hub/messaging/test_send_path.py"),
        SQLITE,
    ),
    "scope": Target(
        "hub/auth.py",
        ("tests/hub/test_auth.py", "tests/hub/test_auth_tokens.py", "tests/hub/test_scoping.py",
         "tests/hub/messaging/test_web.py"),
        f"{SQLITE} and not cli and (test_auth or test_scoping or scoped or consent_edit)",
    ),
}

CONFIG = """\
[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = '''{command}'''

[cosmic-ray.distributor]
name = "local"
"""


def copy_tree(dest: Path) -> None:
    """The committed tree (HEAD) into ``dest``: mutants never touch the working tree."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def sample(session: Path, share: float, seed: int) -> tuple[int, int]:
    """Mark all but a random ``share`` of the pending mutants skipped; (kept, total)."""
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    rng = random.Random(seed)
    with use_db(str(session)) as db:
        items = sorted(db.pending_work_items, key=lambda item: item.job_id)
        dropped = [item for item in items if rng.random() >= share]
        for item in dropped:
            db.set_result(item.job_id, WorkResult(
                worker_outcome=WorkerOutcome.SKIPPED, output="sampled out"))
    return len(items) - len(dropped), len(items)


def run(cmd: list[str], cwd: Path, env: dict[str, str], budget: float | None = None) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # cosmic-ray and the test run it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return -1


def mutate(name: str, target: Target, args: argparse.Namespace) -> None:
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"vethub-mutation-{name}-"))
    copy_tree(work)
    env = {**os.environ, "PYTHONPATH": str(work), "VETHUB_TEST_POSTGRES_URL": ""}
    env.pop("VETHUB_REQUIRE_POSTGRES", None)
    # As in CI: a mutant that makes a test skip itself (say, "no O_TMPFILE here") is caught.
    env.update({f"VETHUB_REQUIRE_{name}": "1" for name in ("DCMTK", "STRACE", "TMPFS", "O_TMPFILE")})
    config, session = out / "config.toml", out / "session.sqlite"
    session.unlink(missing_ok=True)
    config.write_text(CONFIG.format(module=target.module, timeout=args.timeout,
                                    command=target.command(sys.executable)), encoding="utf-8")
    cosmic = [str(Path(sys.executable).with_name("cosmic-ray"))]
    subprocess.run([*cosmic, "init", str(config), str(session)], cwd=work, env=env, check=True)
    if args.sample < 1:
        kept, total = sample(session, args.sample, args.seed)
        print(f"{name}: {kept} of {total} mutants sampled", flush=True)
    started = time.monotonic()
    if run([*cosmic, "baseline", str(config)], work, env, args.timeout * 2) != 0:
        raise SystemExit(f"{name}: the tests fail without any mutation; fix that first")
    left = args.budget - (time.monotonic() - started)
    finished = run([*cosmic, "exec", str(config), str(session)], work, env, max(left, 1)) == 0
    report = subprocess.run(
        [str(Path(sys.executable).with_name("cr-report")), "--show-diff", "--surviving-only",
         str(session)], cwd=work, env=env, capture_output=True, text=True,
    )
    (out / "survivors.txt").write_text(report.stdout, encoding="utf-8")
    tail = report.stdout.strip().splitlines()[-3:]
    print(f"{name}: {'done' if finished else 'stopped at the budget'}; " + " | ".join(tail),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--budget", type=float, default=1200, help="seconds per target")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's tests")
    parser.add_argument("--sample", type=float, default=1.0, help="share of mutants to run")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "mutation")
    args = parser.parse_args()
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    for name in args.targets or TARGETS:
        mutate(name, TARGETS[name], args)


if __name__ == "__main__":
    main()
