"""DICOM C-STORE ingest: the hub beside dcmtk's storescp (and Orthanc when installed).

The same synthetic data (300 CT slices 512x512 16-bit, 3 radiographs 3000x3000 16-bit, 10 small
MR images: 313 files, ~212 MB) is sent by dcmtk's ``storescu`` (TCP_NODELAY=1) over one
association and over four in parallel, to:

- ``vethub run`` (a real daemon: file + fsync + rename + directory fsync + committed row
  before each Success), on a fresh SQLite database and storage root for every run;
- dcmtk's ``storescp --fork`` (files only, no fsync), the 1.00 reference;
- Orthanc, when the ``Orthanc`` binary is installed, with a temporary config and no plugins.

storescp and Orthanc cannot listen on one address only, so they run with their storescu in a
private network namespace (``unshare --net``) with only loopback in it.

Usage: ``.venv/bin/python bench/dicom_ingest.py [--data DIR] [--quick] [--repeat N]
[--processes 1,2]`` (``--quick`` sends 60 CT slices only, for a smoke run; the hub runs once
per ``[dicom] processes`` count given, by default with one receiver process and with two). The receivers take turns for ``N``
rounds (default 3); each one's best and median round are reported, and in how many rounds the
hub was ahead of Orthanc, because on a shared machine a single run of a few seconds moves by 30%
or more.

``--scenario many`` is "many practices at once": ``--practices`` calling AEs (200), each its own
practice sending a 5-slice CT study over its own association (one ``storescu``), at most
``--concurrency`` (50) at a time, to the hub (per ``--processes``), storescp and Orthanc in the
same run: instances per second, p50/p99 of each practice's time from connect to its last
C-STORE response (a storescu process's run), the receiver's CPU per instance (its process
tree's user + system time over the run) beside the storescu processes', and the hub's peak
RSS (its processes together). ``--repeat`` runs that many rounds (default 1) and prints the
hub / Orthanc throughput and p99 ratios of each round. Each receiver first gets one untimed
study from a 201st practice of its own (``--no-warmup`` leaves it out), so that no receiver's
start-up is counted against it, and its run is made in a block group of its own (see
:func:`spread`), so that no receiver pays for the one before it deleting its files.
Then ``--idle`` (1000) connections that never send a byte are held open against the hub while
one practice sends its study, and that practice's time is reported beside its time without
them (the hub runs with ``max_negotiating`` above ``--idle``, so it holds them all, on its
negotiation thread; the summary says how many it held). ``--receivers hub,orthanc`` runs only
those (e.g. the hub alone while a profiler watches it). Its figures are only worth recording
from a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
HUB_AE, CALLING_AE = "VETHUB", "BENCHSCU"


# --- data ---------------------------------------------------------------------------------------

def _image(path: Path, *, sop_class: str, modality: str, rows: int, cols: int, study: str,
           series: str, number: int) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Bench^Dog", "BENCH-1"
    ds.PatientSpeciesDescription, ds.ResponsiblePerson = "Canine", "Owner^Bench"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.InstanceNumber = "20261122", number
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    row = bytes((i * 7 + number) % 256 for i in range(cols * 2))
    ds.PixelData = row * rows
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def make_data(folder: Path, quick: bool) -> list[Path]:
    marker = folder / ("done-quick" if quick else "done")
    if marker.exists():
        return sorted(p for p in folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    study = generate_uid()
    ct, dx, mr = generate_uid(), generate_uid(), generate_uid()
    for n in range(1, (60 if quick else 300) + 1):
        _image(folder / f"ct{n:04d}.dcm", sop_class="1.2.840.10008.5.1.4.1.1.2", modality="CT",
               rows=512, cols=512, study=study, series=ct, number=n)
    if not quick:
        for n in range(1, 4):
            _image(folder / f"dx{n:04d}.dcm", sop_class="1.2.840.10008.5.1.4.1.1.1.1",
                   modality="DX", rows=3000, cols=3000, study=study, series=dx, number=n)
        for n in range(1, 11):
            _image(folder / f"mr{n:04d}.dcm", sop_class="1.2.840.10008.5.1.4.1.1.4",
                   modality="MR", rows=128, cols=128, study=study, series=mr, number=n)
    marker.touch()
    return sorted(folder.glob("*.dcm"))


# --- senders ------------------------------------------------------------------------------------

def storescu_script(port: int, called: str, groups: list[list[Path]]) -> str:
    """A shell fragment that runs one storescu per group in parallel and prints elapsed seconds."""
    lines = ["start=$(date +%s.%N)", "scus="]
    for i, group in enumerate(groups):
        listing = " ".join(str(p) for p in group)
        lines.append(f"TCP_NODELAY=1 storescu -aet {CALLING_AE} -aec {called} 127.0.0.1 {port} "
                     f"{listing} > /tmp/vethub-bench-scu-{os.getpid()}-{i}.log 2>&1 &")
        lines.append('scus="$scus $!"')
    lines += ["fail=0", "for j in $scus; do wait $j || fail=1; done",
              "end=$(date +%s.%N)", 'echo "ELAPSED $(echo "$end - $start" | bc) $fail"']
    return "\n".join(lines)


def _elapsed(output: str) -> tuple[float, bool]:
    for line in output.splitlines():
        if line.startswith("ELAPSED"):
            _, seconds, fail = line.split()
            return float(seconds), fail == "0"
    raise RuntimeError(f"no timing in output:\n{output[-2000:]}")


def groups_of(files: list[Path], n: int) -> list[list[Path]]:
    return [files[i::n] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("receiver did not listen in time")


def run_hub(files: list[Path], associations: int, work: Path, processes: int) -> tuple[float, bool]:
    run_dir = Path(tempfile.mkdtemp(prefix="hub-", dir=work))
    port = free_port()
    config = run_dir / "vethub.toml"
    config.write_text(f"""
[hub]
data_dir = "{run_dir / 'var'}"
[database]
url = "sqlite+aiosqlite:///{run_dir / 'hub.db'}"
[http]
port = 0
[logging]
level = "WARNING"
[dicom]
port = {port}
ae_title = "{HUB_AE}"
storage_root = "{run_dir / 'dicom'}"
max_pdu = 131072
processes = {processes}
[[practices]]
slug = "bench"
name = "Bench Practice"
calling_aes = ["{CALLING_AE}"]
""", encoding="utf-8")
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    subprocess.run([py, "-m", "hub.cli", "db", "upgrade", "--config", str(config)], cwd=run_dir,
                   check=True, capture_output=True)
    proc = subprocess.Popen([py, "-m", "hub.cli", "run", "--config", str(config)], cwd=run_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        out = subprocess.run(["bash", "-c", storescu_script(port, HUB_AE, groups_of(files, associations))],
                             capture_output=True, text=True, check=False, timeout=900)
        result = _elapsed(out.stdout)
        stored = sum(1 for _ in (run_dir / "dicom").rglob("*.dcm"))
        if stored != len(files):
            print(f"  warning: hub stored {stored} of {len(files)} files", file=sys.stderr)
            result = (result[0], False)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def in_netns(script: str) -> str:
    """Run a bash script in a private network namespace with only loopback up."""
    wrapped = "ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null\n" + script
    out = subprocess.run(["unshare", "--net", "bash", "-c", wrapped], capture_output=True,
                         text=True, check=False, timeout=900)
    return out.stdout + out.stderr


def run_storescp(files: list[Path], associations: int, work: Path) -> tuple[float, bool]:
    out_dir = Path(tempfile.mkdtemp(prefix="storescp-", dir=work))
    port = 11112
    script = f"""
TCP_NODELAY=1 storescp --fork -aet STORESCP -od {out_dir} {port} &
scp=$!
for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done
{storescu_script(port, "STORESCP", groups_of(files, associations))}
kill $scp; wait $scp 2>/dev/null
"""
    try:
        return _elapsed(in_netns(script))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def run_orthanc(files: list[Path], associations: int, work: Path) -> tuple[float, bool] | None:
    binary = shutil.which("Orthanc")
    if binary is None:
        return None
    run_dir = Path(tempfile.mkdtemp(prefix="orthanc-", dir=work))
    cfg = run_dir / "orthanc.json"
    cfg.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(run_dir / "db"), "IndexDirectory": str(run_dir / "db"),
        "DicomAet": "ORTHANC", "DicomPort": 4242, "HttpPort": 8042, "RemoteAccessAllowed": False,
        "Plugins": [], "DicomCheckCalledAet": False, "SyncStorageArea": True,
    }), encoding="utf-8")
    script = f"""
TCP_NODELAY=1 {binary} {cfg} > {run_dir}/orthanc.log 2>&1 &
orth=$!
for i in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/4242) 2>/dev/null && break; sleep 0.05; done
{storescu_script(4242, "ORTHANC", groups_of(files, associations))}
kill $orth; wait $orth 2>/dev/null
"""
    try:
        return _elapsed(in_netns(script))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _best_and_median(runs: list[tuple[float, bool]]) -> tuple[float, float]:
    """The fastest and the median round's seconds."""
    seconds = [s for s, _ in runs]
    return min(seconds), statistics.median(seconds)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("each count is at least 1")
    return counts


def _receivers(text: str) -> set[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - {"hub", "storescp", "orthanc"}
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"receivers are hub, storescp, orthanc; not {text!r}")
    return chosen


def _hub_name(processes: int) -> str:
    return "vethub" if processes == 1 else f"vethub-{processes}p"


# --- many practices at once ---------------------------------------------------------------------

def make_practices(folder: Path, practices: int, per_study: int,
                   prefix: str = "PRACTICE") -> list[tuple[str, list[Path]]]:
    """(calling AE, files) of ``practices`` practices, each one study of ``per_study`` CT slices."""
    marker = folder / f"done-{prefix}-{practices}x{per_study}"
    out = []
    for n in range(1, practices + 1):
        ae = f"{prefix}{n:03d}"
        study_dir = folder / ae
        if not marker.exists():
            shutil.rmtree(study_dir, ignore_errors=True)
            study_dir.mkdir(parents=True)
            study, series = generate_uid(), generate_uid()
            for k in range(1, per_study + 1):
                _image(study_dir / f"ct{k:02d}.dcm", sop_class="1.2.840.10008.5.1.4.1.1.2",
                       modality="CT", rows=512, cols=512, study=study, series=series, number=k)
        out.append((ae, sorted(study_dir.glob("*.dcm"))))
    marker.touch()
    return out


def drive(port: int, called: str, concurrency: int, plan: Path) -> dict:
    """Send every practice's study with its own storescu, ``concurrency`` at a time; the
    seconds each took and the total. Runs wherever the receiver is reachable (in the private
    network namespace for storescp and Orthanc: ``--drive``). The plan's warm-up study, if
    any, is sent first and not timed."""
    from concurrent.futures import ThreadPoolExecutor

    planned = json.loads(plan.read_text())
    practices = planned["practices"]
    env = {**os.environ, "TCP_NODELAY": "1"}

    def one(practice: list) -> tuple[float, bool]:
        ae, files = practice
        started = time.monotonic()
        proc = subprocess.run(["storescu", "-aet", ae, "-aec", called, "127.0.0.1", str(port),
                               *files], env=env, capture_output=True, timeout=600, check=False)
        return time.monotonic() - started, proc.returncode == 0

    import resource

    if planned["warmup"] is not None and not one(planned["warmup"])[1]:
        raise RuntimeError("the warm-up study was not stored")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, practices))
    total = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"total": total, "each": [r[0] for r in results], "ok": all(r[1] for r in results),
            "senders_cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def _drive_in_netns(server: str, port: int, called: str, concurrency: int, plan: Path) -> dict:
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    script = f"""
{server} &
srv=$!
for i in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done
echo "STAT0 $(cat /proc/$srv/stat)"
{py} {Path(__file__).resolve()} --drive {port} {called} {concurrency} {plan}
echo "STAT1 $(cat /proc/$srv/stat)"
kill $srv; wait $srv 2>/dev/null
"""
    output = in_netns(script)
    stats = {line[:5]: _cpu_seconds(line[6:]) for line in output.splitlines()
             if line.startswith(("STAT0 ", "STAT1 "))}
    for line in output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            if len(stats) == 2:  # the server's CPU over the run
                result["cpu"] = stats["STAT1"] - stats["STAT0"]
            return result
    raise RuntimeError(f"no result from the driver:\n{output[-2000:]}")


def _tree_pids(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def _cpu_seconds(stat: str) -> float:
    """User + system seconds of a /proc/<pid>/stat line, its reaped children's included (a
    storescp --fork child's time is its parent's once it has exited)."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children (the hub's worker processes)."""
    total = 0.0
    for p in _tree_pids(pid):
        try:
            total += _cpu_seconds(Path(f"/proc/{p}/stat").read_text())
        except OSError:
            pass
    return total


def _tree_rss(pid: int) -> int:
    """RSS of ``pid`` and its children (the hub's worker processes), in bytes."""
    total = 0
    for p in _tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class _Peak:
    """Samples a process tree's RSS every 50 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.peak = pid, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, _tree_rss(self.pid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def _hub_many(practices: list[tuple[str, list[Path]]], concurrency: int, work: Path,
              processes: int, plan: Path, idle: int) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="hub-many-", dir=work))
    port = free_port()
    warmup = json.loads(plan.read_text())["warmup"]
    practice_blocks = "".join(
        f'[[practices]]\nslug = "p{n}"\nname = "Practice {n}"\ncalling_aes = ["{ae}"]\n'
        for n, (ae, _) in enumerate([*practices, *([warmup] if warmup else [])], start=1)
    )
    config = run_dir / "vethub.toml"
    config.write_text(f"""
[hub]
data_dir = "{run_dir / 'var'}"
[database]
url = "sqlite+aiosqlite:///{run_dir / 'hub.db'}"
[http]
port = 0
[logging]
level = "ERROR"
[dicom]
port = {port}
ae_title = "{HUB_AE}"
storage_root = "{run_dir / 'dicom'}"
processes = {processes}
max_associations = {max(concurrency, 10)}
max_negotiating = {max(100, idle + 100)}
{practice_blocks}""", encoding="utf-8")
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    subprocess.run([py, "-m", "hub.cli", "db", "upgrade", "--config", str(config)], cwd=run_dir,
                   check=True, capture_output=True)
    proc = subprocess.Popen([py, "-m", "hub.cli", "run", "--config", str(config)], cwd=run_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        peak = _Peak(proc.pid)
        cpu = _tree_cpu(proc.pid)
        result = drive(port, HUB_AE, concurrency, plan)
        result["cpu"] = _tree_cpu(proc.pid) - cpu
        result["rss"] = peak.stop()
        stored = sum(1 for _ in (run_dir / "dicom").rglob("*.dcm"))
        warmed = len(warmup[1]) if warmup else 0
        result["ok"] = result["ok"] and stored == sum(len(f) for _, f in practices) + warmed
        if idle:
            result["idle"] = _with_idle(port, practices[0], idle)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def _with_idle(port: int, practice: tuple[str, list[Path]], idle: int) -> dict:
    """One practice's study alone, then again with ``idle`` silent connections held open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < idle + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle + 256), hard))
    ae, files = practice
    env = {**os.environ, "TCP_NODELAY": "1"}

    def send() -> tuple[float, bool]:
        started = time.monotonic()
        proc = subprocess.run(["storescu", "-aet", ae, "-aec", HUB_AE, "127.0.0.1", str(port),
                               *map(str, files)], env=env, capture_output=True, timeout=600)
        return time.monotonic() - started, proc.returncode == 0

    alone = send()
    held: list[socket.socket] = []
    try:
        for _ in range(idle):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        time.sleep(1)  # the hub turns away what is over max_negotiating; count what stays
        still = 0
        for sock in held:
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    continue  # closed by the hub
            except BlockingIOError:
                still += 1  # open, nothing to read
                continue
            except OSError:
                continue
        crowded = send()
    finally:
        for sock in held:
            sock.close()
    return {"alone": alone[0], "with_idle": crowded[0], "ok": alone[1] and crowded[1],
            "opened": len(held), "held": still}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _many_round(args: argparse.Namespace, practices: list[tuple[str, list[Path]]], work: Path,
                plan: Path) -> dict[str, dict]:
    """One run of each chosen receiver, one after the other; their results by name."""
    results: dict[str, dict] = {}
    for processes in args.processes if "hub" in args.receivers else []:
        os.sync()
        results[_hub_name(processes)] = _hub_many(
            practices, args.concurrency, work, processes, plan, args.idle
        )
    if "storescp" in args.receivers:
        os.sync()
        out_dir = Path(tempfile.mkdtemp(prefix="storescp-", dir=work))
        results["storescp"] = _drive_in_netns(
            f"TCP_NODELAY=1 storescp --fork -aet STORESCP -od {out_dir} 11112", 11112, "STORESCP",
            args.concurrency, plan,
        )
        shutil.rmtree(out_dir, ignore_errors=True)
    orthanc = shutil.which("Orthanc")
    if orthanc is not None and "orthanc" in args.receivers:
        os.sync()
        run_dir = Path(tempfile.mkdtemp(prefix="orthanc-", dir=work))
        cfg = run_dir / "orthanc.json"
        cfg.write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(run_dir / "db"),
            "IndexDirectory": str(run_dir / "db"), "DicomAet": "ORTHANC",
            "DicomPort": 4242, "HttpPort": 8042, "RemoteAccessAllowed": False,
            "Plugins": [], "DicomCheckCalledAet": False, "SyncStorageArea": True,
        }), encoding="utf-8")
        results["orthanc"] = _drive_in_netns(
            f"TCP_NODELAY=1 {orthanc} {cfg} > {run_dir}/orthanc.log 2>&1", 4242, "ORTHANC",
            args.concurrency, plan,
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


def _many_table(results: dict[str, dict], count: int) -> None:
    print("| receiver | instances/s | p50 s | p99 s | CPU ms/inst | storescu CPU ms/inst "
          "| peak RSS MiB | all stored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        rss = f"{r['rss'] / 2**20:.0f}" if "rss" in r else "-"
        cpu = f"{r['cpu'] * 1000 / count:.2f}" if "cpu" in r else "-"
        print(f"| {name} | {count / r['total']:.1f} | {_pct(r['each'], 0.5):.2f} | "
              f"{_pct(r['each'], 0.99):.2f} | {cpu} | {r['senders_cpu'] * 1000 / count:.2f} | "
              f"{rss} | {'yes' if r['ok'] else 'NO'} |", flush=True)


def spread(work: Path) -> None:
    """Mark ``work`` as the top of directory hierarchies (``chattr +T``, ext2/3/4) so that each
    receiver's run directory made in it gets a block group of its own.

    Every run deletes its files when it ends. On an ext4 without a journal (this kind of VM's
    disk) a new inode first steps over each inode its block group freed in the last minutes,
    and the next receiver's files were all made in the group the previous one had just
    emptied: a quarter of a receiver's CPU in perf, paid by whichever receiver came next.
    Spread, no receiver pays for another's clean-up. Best effort: elsewhere nothing changes."""
    if os.environ.get("VETHUB_BENCH_NO_SPREAD"):
        return
    subprocess.run(["chattr", "+T", str(work)], capture_output=True, check=False)


def many_practices(args: argparse.Namespace) -> int:
    data = args.data or Path(tempfile.gettempdir()) / "vethub-bench-dicom-many"
    practices = make_practices(data, args.practices, args.instances)
    work = Path(tempfile.mkdtemp(prefix="vethub-bench-"))
    spread(work)
    # A receiver's first association pays for its start-up (a Python process's first
    # statements and code paths, Orthanc's first index writes): each receiver gets one study
    # from a practice of its own first, untimed, so the rounds compare receivers at work.
    warmup = make_practices(data, 1, args.instances, prefix="WARMUP")[0] if args.warmup else None
    plan = work / "plan.json"
    plan.write_text(json.dumps({
        "warmup": [warmup[0], [str(f) for f in warmup[1]]] if warmup else None,
        "practices": [[ae, [str(f) for f in files]] for ae, files in practices]}))
    count = sum(len(f) for _, f in practices)
    rounds = args.repeat or 1
    print(f"# DICOM many practices, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores; {len(practices)} practices x {args.instances} instances, "
          f"{args.concurrency} associations at a time; {rounds} round(s)")
    runs: list[dict[str, dict]] = []
    try:
        for n in range(rounds):
            runs.append(_many_round(args, practices, work, plan))
            if rounds > 1:
                print(f"round {n + 1}")
            _many_table(runs[-1], count)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Receivers in one round ran one after the other on the same machine: compare within it.
    for name in (_hub_name(p) for p in args.processes):
        pairs = [(r[name], r["orthanc"]) for r in runs if name in r and "orthanc" in r]
        if not pairs:
            continue
        rate = [o["total"] / h["total"] for h, o in pairs]
        p99 = [_pct(h["each"], 0.99) / _pct(o["each"], 0.99) for h, o in pairs]
        print(f"{name} / Orthanc per round: throughput {' '.join(f'{x:.2f}' for x in rate)}; "
              f"p99 {' '.join(f'{x:.2f}' for x in p99)} (below 1 is better)")
    results = runs[-1]
    for name, r in results.items():
        if "idle" in r:
            i = r["idle"]
            print(f"{name}: one practice alone {i['alone']:.2f} s, with {i['opened']} idle "
                  f"connections opened ({i['held']} held by the hub, the rest turned away) "
                  f"{i['with_idle']:.2f} s; {'ok' if i['ok'] else 'FAILED'}")
    return 0 if all(r["ok"] for run in runs for r in run.values()) else 1


# --- main ---------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="where the synthetic files are kept between runs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", default="1,2", type=_counts,
                        help="hub receiver processes, one run of the hub per count "
                             "(comma-separated; default 1,2)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="rounds; each receiver's best round is reported (default 3; "
                             "many: 1)")
    parser.add_argument("--scenario", choices=["ingest", "many"], default="ingest",
                        help="ingest (default) or many: many practices at once")
    parser.add_argument("--practices", type=int, default=200, help="many: calling AEs")
    parser.add_argument("--instances", type=int, default=5, help="many: instances per study")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="many: time each receiver from its first association (by default "
                             "one untimed study from a practice of its own goes first)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="many: associations at a time")
    parser.add_argument("--idle", type=int, default=1000,
                        help="many: idle connections held while one practice sends (0: skip)")
    parser.add_argument("--receivers", default="hub,storescp,orthanc", type=_receivers,
                        help="many: which receivers run (comma-separated; default all three), "
                             "e.g. hub alone while profiling it")
    parser.add_argument("--drive", nargs=4, metavar=("PORT", "CALLED", "CONCURRENCY", "PLAN"),
                        help=argparse.SUPPRESS)  # the sender side, run in a network namespace
    args = parser.parse_args()
    if args.drive:
        port, called, concurrency, plan = args.drive
        print(json.dumps(drive(int(port), called, int(concurrency), Path(plan))))
        return 0
    for tool in ("storescu", "storescp", "unshare", "bc"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (dcmtk, util-linux, bc)", file=sys.stderr)
            return 2
    if args.scenario == "many":
        return many_practices(args)
    args.repeat = args.repeat or 3
    data = args.data or Path(tempfile.gettempdir()) / (
        "vethub-bench-dicom-quick" if args.quick else "vethub-bench-dicom")
    files = make_data(data, args.quick)
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    work = Path(tempfile.mkdtemp(prefix="vethub-bench-"))
    print(f"# DICOM ingest, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores; {len(files)} files, {total_mb:.0f} MB")
    rounds: dict[tuple[str, int], list[tuple[float, bool]]] = {}
    runners = {"storescp": lambda assoc: run_storescp(files, assoc, work)}
    for count in args.processes:
        runners[_hub_name(count)] = lambda assoc, count=count: run_hub(files, assoc, work, count)
    runners["orthanc"] = lambda assoc: run_orthanc(files, assoc, work)
    try:
        # Rounds interleave the receivers, so a burst of load on the machine hits all of them.
        for n in range(args.repeat):
            for assoc in (1, 4):
                for name, run in runners.items():
                    # storescp does not fsync: without this its ~200 MB of dirty pages are
                    # flushed during the next receiver's run and slow its fsyncs.
                    os.sync()
                    r = run(assoc)
                    if r is not None:
                        rounds.setdefault((name, assoc), []).append(r)
                        print(f"  round {n + 1}: {name}, {assoc} assoc: "
                              f"{len(files) / r[0]:.1f} inst/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"best and median of {args.repeat} rounds")
    print("| receiver | assoc | instances/s (best) | MB/s | x storescp | instances/s (median) "
          "| x storescp | all stored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in runners:
        for assoc in (1, 4):
            runs = rounds.get((name, assoc))
            if runs is None:
                print(f"| {name} | {assoc} | not installed | | | | | |")
                continue
            best, median = _best_and_median(runs)
            ref_best, ref_median = _best_and_median(rounds[("storescp", assoc)])
            ok = all(ok for _, ok in runs)
            print(f"| {name} | {assoc} | {len(files) / best:.1f} | {total_mb / best:.0f} | "
                  f"{ref_best / best:.2f} | {len(files) / median:.1f} | {ref_median / median:.2f} | "
                  f"{'yes' if ok else 'NO'} |")
    for count in args.processes:
        for assoc in (1, 4):
            name = _hub_name(count)
            hub, orthanc = rounds.get((name, assoc)), rounds.get(("orthanc", assoc))
            if hub and orthanc:  # a round's receivers ran one after the other, on one machine
                ahead = sum(h < o for (h, _), (o, _) in zip(hub, orthanc, strict=True))
                ratios = sorted(o / h for (h, _), (o, _) in zip(hub, orthanc, strict=True))
                print(f"{assoc} assoc: {name} ahead of Orthanc in {ahead} of {len(hub)} rounds; "
                      f"median {statistics.median(ratios):.2f}; {name} / Orthanc per round "
                      f"{' '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
