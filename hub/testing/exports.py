"""Realistic PIMS export files for tests and benchmarks, in the file-export connector's format.

``generate(clients=..., seed=...)`` builds a deterministic :class:`ExportData` (same seed, same
rows); ``write_export(directory, data)`` writes ``clients.csv``, ``patients.csv``,
``reminders.csv``, ``appointments.csv`` and ``visits.csv`` the way a PIMS does (written under a ``.part`` name and
renamed in). ``data.change(n)`` returns the rows of an incremental export with ``n`` changed
clients (new email or phone, some inactivated) and a deceased pet. ``bad_rows`` lists the
broken rows a test can append (bad email, unparseable phone, missing id), and
``write_csv(..., encoding=...)``/``truncate(...)`` make wrongly encoded or cut-off files.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

CLIENT_COLUMNS = ["client_id", "first_name", "last_name", "status", "client_class", "balance",
                  "comms_disabled", "email", "phone_home", "phone_work", "phone_mobile",
                  "address_line1", "address_line2", "city", "region", "postcode", "country",
                  "modified_at", "email_status", "pet_app_status"]
PATIENT_COLUMNS = ["patient_id", "client_id", "name", "species", "breed", "sex", "birth_date",
                   "status", "modified_at"]
REMINDER_COLUMNS = ["reminder_id", "patient_id", "service", "due_date", "status", "modified_at"]
APPOINTMENT_COLUMNS = ["appointment_id", "patient_id", "client_id", "start", "type", "status",
                       "modified_at"]
VISIT_COLUMNS = ["visit_id", "patient_id", "client_id", "date", "reason", "modified_at"]
FILES = {"clients": CLIENT_COLUMNS, "patients": PATIENT_COLUMNS, "reminders": REMINDER_COLUMNS,
         "appointments": APPOINTMENT_COLUMNS, "visits": VISIT_COLUMNS}

FIRST = ["Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Ava", "Elijah", "Sophia", "James",
         "Isabella", "William", "Mia", "Benjamin", "Charlotte", "Lucas", "Harper", "Henry",
         "Evelyn", "Theodore", "Zoë", "José", "Siobhán", "Renée", "Ana María"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
        "Thomas", "Taylor", "Moore", "Jackson", "O'Brien", "Nguyen", "Kowalski", "Müller"]
STREETS = ["Oak St", "Maple Ave", "Cedar Ln", "Pine St", "Elm St", "Washington Ave",
           "Lake View Dr", "Hillcrest Rd", "Sunset Blvd", "Park Pl"]
CITIES = [("Springfield", "IL", "627"), ("Portland", "OR", "972"), ("Austin", "TX", "787"),
          ("Denver", "CO", "802"), ("Madison", "WI", "537"), ("Raleigh", "NC", "276")]
AREA_CODES = ["217", "503", "512", "303", "608", "919", "415", "617"]
PET_NAMES = ["Bella", "Max", "Luna", "Charlie", "Lucy", "Cooper", "Daisy", "Milo", "Bailey",
             "Rocky", "Nala", "Simba", "Loki", "Pepper", "Ziggy", "Mochi"]
SPECIES = {"Canine": ["Labrador Retriever", "German Shepherd", "Golden Retriever", "Beagle",
                      "Mixed"],
           "Feline": ["Domestic Shorthair", "Maine Coon", "Siamese", "Ragdoll"],
           "Lapine": ["Holland Lop", "Mixed"]}
SERVICES = ["Rabies vaccination", "DHPP booster", "FVRCP booster", "Annual wellness exam",
            "Dental cleaning", "Heartworm test", "Flea and tick prevention"]
APPOINTMENT_TYPES = ["Consult", "Vaccination", "Surgery", "Dental", "Recheck"]
CLASSES = ["Standard", "Standard", "Standard", "VIP", "Breeder", "Staff"]
EMAIL_STATUSES = ["valid", "valid", "valid", "unverified", "unverified", "bounced", "invalid"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class ExportData:
    """Generated rows of each PIMS export file, deterministic for a seed."""
    clients: list[list[str]] = field(default_factory=list)
    patients: list[list[str]] = field(default_factory=list)
    reminders: list[list[str]] = field(default_factory=list)
    appointments: list[list[str]] = field(default_factory=list)
    visits: list[list[str]] = field(default_factory=list)
    seed: int = 0

    def rows(self, name: str) -> list[list[str]]:
        return getattr(self, name)

    def change(self, n: int, *, seed: int | None = None,
               modified_at: datetime | None = None) -> ExportData:
        """An incremental export: ``n`` clients changed (every tenth inactivated, the others a
        new email and mobile), and the first pet of the first changed client deceased."""
        rnd = random.Random(self.seed + 1 if seed is None else seed)
        stamp = (modified_at or EPOCH + timedelta(days=30)).isoformat()
        picked = rnd.sample(range(len(self.clients)), min(n, len(self.clients)))
        out = ExportData(seed=self.seed)
        for k, i in enumerate(sorted(picked)):
            row = list(self.clients[i])
            if k % 10 == 9:
                row[3] = "inactive"
            else:
                row[7] = f"{row[1].split()[0].lower()}.{i}.new@example.org"
                row[10] = _phone(rnd)
            row[17] = stamp
            out.clients.append(row)
        if out.clients:
            owner = out.clients[0][0]
            pet = next((p for p in self.patients if p[1] == owner), None)
            if pet is not None:
                pet = list(pet)
                pet[7] = "deceased"
                pet[8] = stamp
                out.patients.append(pet)
        return out


def _phone(rnd: random.Random) -> str:
    area = rnd.choice(AREA_CODES)
    style = rnd.randrange(3)
    exchange, line = rnd.randint(201, 989), rnd.randint(0, 9999)
    if style == 0:
        return f"({area}) {exchange}-{line:04d}"
    if style == 1:
        return f"{area}-{exchange}-{line:04d}"
    return f"+1 {area} {exchange} {line:04d}"


def generate(clients: int = 100, patients: int | None = None, reminders: int | None = None,
             appointments: int | None = None, visits: int | None = None, *,
             seed: int = 0) -> ExportData:
    """Deterministic rows: US clients with 1.5 pets each, 2 reminders per pet and one visit
    for every other client by default."""
    rnd = random.Random(seed)
    patients = int(clients * 1.5) if patients is None else patients
    reminders = patients * 2 if reminders is None else reminders
    appointments = clients // 2 if appointments is None else appointments
    visits = clients // 2 if visits is None else visits
    data = ExportData(seed=seed)
    # Columns added later draw from their own streams, so every older column of a given seed
    # is what it was.
    crnd = random.Random(seed + 11)
    for i in range(1, clients + 1):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        city, state, zip3 = rnd.choice(CITIES)
        modified = EPOCH + timedelta(minutes=i)
        has_email = rnd.random() < 0.9
        email_local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        data.clients.append([
            f"C{i:07d}", first, last, "active" if rnd.random() < 0.95 else "inactive",
            rnd.choice(CLASSES), f"{rnd.choice([0, 0, 0, rnd.uniform(5, 900)]):.2f}",
            "yes" if rnd.random() < 0.03 else "no",
            f"{email_local}{i}@example.com" if has_email else "",
            _phone(rnd) if rnd.random() < 0.4 else "",
            _phone(rnd) if rnd.random() < 0.2 else "",
            _phone(rnd) if rnd.random() < 0.85 else "",
            f"  {rnd.randint(1, 9999)} {rnd.choice(STREETS)} ",
            f"Apt {rnd.randint(1, 40)}" if rnd.random() < 0.15 else "",
            city, state, f"{zip3}{rnd.randint(0, 99):02d}", "US", modified.isoformat(),
            crnd.choice(EMAIL_STATUSES) if has_email else "",
            "active" if crnd.random() < 0.3 else "unregistered",
        ])
    for i in range(1, patients + 1):
        owner = data.clients[(i * 7919) % clients][0] if clients else ""
        species = rnd.choice(list(SPECIES))
        born = date(2010, 1, 1) + timedelta(days=rnd.randint(0, 5700))
        data.patients.append([
            f"P{i:07d}", owner, rnd.choice(PET_NAMES), species, rnd.choice(SPECIES[species]),
            rnd.choice(["Male", "Female", "Male Neutered", "Female Spayed"]), born.isoformat(),
            "active" if rnd.random() < 0.97 else "inactive",
            (EPOCH + timedelta(minutes=i)).isoformat(),
        ])
    for i in range(1, reminders + 1):
        pet_id = data.patients[(i * 104729) % patients][0] if patients else ""
        due = date(2026, 1, 1) + timedelta(days=rnd.randint(0, 400))
        data.reminders.append([f"R{i:07d}", pet_id, rnd.choice(SERVICES), due.isoformat(), "active",
                               (EPOCH + timedelta(minutes=i)).isoformat()])
    for i in range(1, appointments + 1):
        pet = data.patients[(i * 31) % patients] if patients else ["", ""]
        start = EPOCH + timedelta(days=rnd.randint(0, 120), hours=rnd.randint(8, 17))
        data.appointments.append([f"A{i:07d}", pet[0], pet[1], start.isoformat(),
                                  rnd.choice(APPOINTMENT_TYPES),
                                  rnd.choice(["booked", "confirmed", "completed"]),
                                  (EPOCH + timedelta(minutes=i)).isoformat()])
    vrnd = random.Random(seed + 7)
    for i in range(1, visits + 1):
        pet = data.patients[(i * 613) % patients] if patients else ["", ""]
        at = EPOCH + timedelta(days=vrnd.randint(0, 120), hours=vrnd.randint(8, 17))
        data.visits.append([f"V{i:07d}", pet[0], pet[1], at.isoformat(),
                            vrnd.choice(APPOINTMENT_TYPES), at.isoformat()])
    return data


def bad_rows() -> dict[str, list[str]]:
    """Client rows that must be rejected, by what is wrong with them."""
    base = ["", "Bad", "Row", "active", "Standard", "0.00", "no", "", "", "", "",
            "1 Main St", "", "Springfield", "IL", "62701", "US", EPOCH.isoformat(), "", ""]

    def row(**cells: str) -> list[str]:
        r = list(base)
        for name, value in cells.items():
            r[CLIENT_COLUMNS.index(name)] = value
        return r

    return {
        "bad email": row(client_id="CBAD0001", email="not-an-email@"),
        "unparseable phone": row(client_id="CBAD0002", phone_mobile="call me maybe"),
        "missing id": row(client_id="", email="noid@example.com"),
    }


def write_csv(path: Path, columns: list[str], rows: list[list[str]], *, encoding: str = "utf-8",
              bom: bool = False, header: list[str] | None = None, rename_in: bool = True) -> Path:
    """Write one export file; by default under ``<name>.part`` and renamed in when complete."""
    target = Path(path)
    temp = target.with_name(target.name + ".part") if rename_in else target
    with open(temp, "w", encoding="utf-8-sig" if bom else encoding, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header or columns)
        writer.writerows(rows)
    if rename_in:
        os.replace(temp, target)
    return target


def write_export(directory: Path, data: ExportData, *, encoding: str = "utf-8",
                 bom: bool = False, suffix: str = "") -> dict[str, Path]:
    """Write every non-empty file of ``data`` into ``directory``; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, columns in FILES.items():
        rows = data.rows(name)
        if rows:
            written[name] = write_csv(directory / f"{name}{suffix}.csv", columns, rows,
                                      encoding=encoding, bom=bom)
    return written


def make_stable(*paths: Path, age: float = 60.0) -> None:
    """Backdate files' mtimes so a stable-size check takes them at once."""
    when = datetime.now(UTC).timestamp() - age
    for p in paths:
        os.utime(p, (when, when))


def truncate(path: Path, keep_bytes: int) -> None:
    """Cut a file after ``keep_bytes`` bytes, as an interrupted copy leaves it."""
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)
