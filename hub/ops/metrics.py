"""The Prometheus counters of failures, one per kind of failure, each with a ``reason`` label.

Declared here, in one place, so docs/operator-guide.md and docs/alerts.yml can be checked
against them (tests/hub/ops/test_alert_rules.py). ``vethub_jobs_dead_total`` lives with the
queue (:mod:`hub.jobs`) and ``vethub_events_total`` with the events (:mod:`hub.events`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DICOM_REFUSALS = Counter(
    "vethub_dicom_refusals_total", "C-STOREs and associations the receiver refused",
    ["status", "reason"])
SEND_FAILURES = Counter(
    "vethub_send_failures_total", "Communications that ended failed or bounced", ["channel", "reason"])
SYNC_FAILURES = Counter(
    "vethub_pims_sync_failures_total", "PIMS sync runs that failed", ["connector", "reason"])
READY = Gauge("vethub_ready", "1 when every readiness check passes, else 0")
CHECK_OK = Gauge("vethub_check_ok", "1 when the readiness check passes, else 0", ["check"])
STORAGE_FREE = Gauge("vethub_storage_free_bytes", "Free bytes under a storage root", ["root"])
DB_UNAVAILABLE = Counter(
    "vethub_database_unavailable_total", "Requests and job claims refused because the database was unreachable",
    ["where"])
