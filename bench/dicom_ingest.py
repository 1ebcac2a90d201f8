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


def _hub_name(processes: int) -> str:
    return "vethub" if processes == 1 else f"vethub-{processes}p"


# --- main ---------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="where the synthetic files are kept between runs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", default="1,2", type=_counts,
                        help="hub receiver processes, one run of the hub per count "
                             "(comma-separated; default 1,2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; each receiver's best round is reported (default 3)")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "unshare", "bc"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (dcmtk, util-linux, bc)", file=sys.stderr)
            return 2
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
