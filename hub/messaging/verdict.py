"""Contact verdicts: the typed answer to "may we contact this person, on this channel, for this
category, now?", and how the answers of several policies combine.

The core gathers the facts (:mod:`hub.messaging.facts`) into a :class:`ContactContext`, calls
the policy hook ``vethub_contact_verdict(context)`` and combines every result: **any veto wins**
(with every veto's reasons), otherwise a deferral wins over an allow. The combined verdict and
all its reasons are stored with the communication.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cached_property
from typing import Any, Literal

from hub.messaging.addresses import mobile_number

Decision = Literal["allow", "veto", "defer"]

#: Categories a person can unsubscribe from (emails carry List-Unsubscribe for these).
UNSUBSCRIBABLE = frozenset({"reminder", "appointment", "survey", "loyalty", "marketing"})
#: Categories about a patient: the client needs at least one active patient.
PATIENT_RELATED = frozenset({"reminder", "appointment", "survey", "results"})
CATEGORIES = frozenset({"reminder", "appointment", "survey", "loyalty", "marketing", "account", "results"})
CHANNELS = ("email", "sms", "postcard")


@dataclass(frozen=True)
class Reason:
    """Why: a stable ``code`` for machines (``client_inactive``) and a sentence for people."""

    code: str
    message: str
    plugin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "plugin": self.plugin}


@dataclass(frozen=True)
class Verdict:
    """Whether a message may go to a contact now, later or not at all, and the reasons why."""
    decision: Decision
    reasons: tuple[Reason, ...] = ()
    #: for a deferral: when to try again
    defer_until: datetime | None = None

    @classmethod
    def allow(cls, *reasons: Reason) -> Verdict:
        return cls("allow", tuple(reasons))

    @classmethod
    def veto(cls, code: str, message: str) -> Verdict:
        return cls("veto", (Reason(code, message),))

    @classmethod
    def defer(cls, code: str, message: str, until: datetime) -> Verdict:
        return cls("defer", (Reason(code, message),), until)

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    def with_plugin(self, plugin: str) -> Verdict:
        return Verdict(
            self.decision,
            tuple(r if r.plugin else Reason(r.code, r.message, plugin) for r in self.reasons),
            self.defer_until,
        )

    def reasons_json(self, channel: str | None = None) -> list[dict[str, Any]]:
        out = []
        for r in self.reasons:
            d = r.as_dict()
            d["decision"] = self.decision
            if channel:
                d["channel"] = channel
            out.append(d)
        return out


@dataclass(frozen=True)
class ClientFacts:
    """What the PIMS says about a client (pet owner)."""

    id: int
    practice_id: int | None
    name: str
    active: bool
    #: None: the PIMS cannot supply the flag (see ContactContext.unknown_comms_flag_vetoes)
    comms_disabled: bool | None
    active_patients: int
    email: str | None
    #: the mobile number as the PIMS wrote it; :attr:`mobile` is its checked E.164 form
    phone_mobile: str | None
    postal_address: Mapping[str, str] | None
    #: the country a number written without one is read in (the practice's)
    region: str = "US"

    @cached_property
    def mobile(self) -> str | None:
        """E.164 when it parses as a mobile (or mobile-or-fixed) number.

        Parsed on first use, not when the facts are gathered: parsing costs more than the rest
        of a client's facts together, and most messages are settled on an earlier channel."""
        return mobile_number(self.phone_mobile, self.region)


@dataclass(frozen=True)
class SuppressionFact:
    """A recorded reason not to use a contact route (an opt-out or an invalid address)."""
    kind: str  # email | sms | postal
    reason: str  # opt_out | invalid
    source: str
    detail: str = ""


@dataclass(frozen=True)
class ContactContext:
    """Everything a contact policy may look at. Pure data: policies do no I/O."""

    channel: str
    category: str
    now: datetime
    #: the address for this channel: email, E.164 phone, or "" for postcards
    address: str
    postal_address: Mapping[str, str] | None
    #: the client, when the recipient is one; None for practices, companies, bare addresses
    client: ClientFacts | None
    #: latest consent per (category, channel); "*" rows already resolved in
    preference: bool | None
    preference_source: str | None
    suppressions: tuple[SuppressionFact, ...]
    practice_timezone: str
    quiet_hours: tuple[time, time] | None
    quiet_hours_channels: frozenset[str]
    require_opt_in: frozenset[str] = field(default_factory=frozenset)
    #: categories vetoed when the client's PIMS "no communications" flag is unknown
    unknown_comms_flag_vetoes: frozenset[str] = frozenset({"marketing"})

    @property
    def patient_related(self) -> bool:
        return self.category in PATIENT_RELATED

    @property
    def unsubscribable(self) -> bool:
        return self.category in UNSUBSCRIBABLE


def combine(results: Iterable[tuple[str | None, Verdict | None]]) -> Verdict:
    """Combine policy results: any veto wins; then a deferral (the latest); then allow.

    :param results: (plugin name, verdict or None) pairs; None abstains.
    """
    vetoes: list[Reason] = []
    defers: list[Verdict] = []
    allows: list[Reason] = []
    for plugin, verdict in results:
        if verdict is None:
            continue
        if not isinstance(verdict, Verdict):
            raise TypeError(
                f"plugin {plugin!r}: vethub_contact_verdict returned {type(verdict).__name__}, "
                "expected hub.messaging.verdict.Verdict or None"
            )
        if plugin:
            verdict = verdict.with_plugin(plugin)
        if verdict.decision == "veto":
            vetoes.extend(verdict.reasons)
        elif verdict.decision == "defer":
            defers.append(verdict)
        else:
            allows.extend(verdict.reasons)
    if vetoes:
        return Verdict("veto", tuple(vetoes))
    if defers:
        until = max(d.defer_until for d in defers if d.defer_until) if any(
            d.defer_until for d in defers
        ) else None
        return Verdict("defer", tuple(r for d in defers for r in d.reasons), until)
    return Verdict("allow", tuple(allows) or (Reason("allowed", "no policy objected"),))


def unknown_comms_flag(context: ContactContext) -> Verdict | None:
    """The core's own veto: a client whose PIMS cannot say whether it disabled their
    communications gets none of the configured categories (marketing by default), whatever
    the policies installed. Unknown is not "allowed"."""
    client = context.client
    if (client is None or client.comms_disabled is not None
            or context.category not in context.unknown_comms_flag_vetoes):
        return None
    return Verdict.veto(
        "pims_comms_unknown",
        f"the PIMS cannot say whether {client.name} accepts communications; "
        f"{context.category} messages need that flag",
    )


def judge(pm: Any, context: ContactContext) -> Verdict:
    """Call every ``vethub_contact_verdict`` implementation and combine the results, with the
    core's own veto for an unknown PIMS communications flag."""
    caller = pm.hook.vethub_contact_verdict
    results: list[tuple[str | None, Verdict | None]] = [("core", unknown_comms_flag(context))]
    for impl in caller.get_hookimpls():
        results.append((impl.plugin_name, impl.function(context=context)))
    return combine(results)
