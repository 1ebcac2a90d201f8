"""The built-in contact policy (``vethub_contact_verdict``).

A pure decision over the facts the core gathered. In order, it vetoes when:

- the client is not active in the PIMS (``client_inactive``);
- the category is about a patient and the client has no active patient (``no_active_patient``);
- the PIMS disables communications for the client (``pims_comms_disabled``);
- the client's preference does not allow this category on this channel
  (``preference_opt_out``; ``no_opt_in`` for categories configured to need an opt-in);
- an unsubscribe, STOP or bounce stands against the address (``address_opted_out``,
  ``address_invalid``);
- the channel has no usable address (``no_email``, ``invalid_email``, ``no_mobile``,
  ``no_postal_address``);

and defers (never drops) a message that would arrive in quiet hours in the practice's time
zone (``quiet_hours``), until the quiet hours end. Account (operational) mail to practices and
companies only needs a usable, non-bounced address.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hub.hookspecs import hookimpl
from hub.messaging.verdict import ContactContext, Reason, Verdict

# A deliberately plain check (the hub validated syntax when the address came in; this catches
# blanks and obvious junk without a DNS lookup in a pure policy).
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _usable_address(ctx: ContactContext) -> Verdict | None:
    if ctx.channel == "email":
        if not ctx.address:
            return Verdict.veto("no_email", "no email address on file")
        if not _EMAIL.match(ctx.address):
            return Verdict.veto("invalid_email", f"{ctx.address!r} is not a usable email address")
    elif ctx.channel == "sms":
        if not ctx.address:
            return Verdict.veto("no_mobile", "no mobile phone number on file")
        if not _E164.match(ctx.address):
            return Verdict.veto("no_mobile", f"{ctx.address!r} is not a mobile number in E.164 form")
    elif ctx.channel == "postcard":
        addr = ctx.postal_address or {}
        if not (addr.get("address_line1") and (addr.get("address_city") or addr.get("address_zip"))):
            return Verdict.veto("no_postal_address", "no complete mailing address on file")
    else:
        return Verdict.veto("unknown_channel", f"unknown channel {ctx.channel!r}")
    return None


def _suppressed(ctx: ContactContext) -> Verdict | None:
    for s in ctx.suppressions:
        if s.reason == "invalid":
            return Verdict.veto(
                "address_invalid",
                f"the {s.kind} address is marked invalid ({s.source}{': ' + s.detail if s.detail else ''})",
            )
    if ctx.category == "account":
        return None  # operational mail is not subject to marketing opt-outs
    for s in ctx.suppressions:
        if s.reason == "opt_out":
            return Verdict.veto(
                "address_opted_out",
                f"the {s.kind} address opted out ({s.source}{': ' + s.detail if s.detail else ''})",
            )
    return None


def _quiet(ctx: ContactContext) -> Verdict | None:
    if ctx.quiet_hours is None or ctx.channel not in ctx.quiet_hours_channels:
        return None
    start, end = ctx.quiet_hours
    if start == end:
        return None
    tz = ZoneInfo(ctx.practice_timezone or "UTC")
    local = ctx.now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    inside = (start <= t or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    until = datetime.combine(end_day, end, tzinfo=tz)
    return Verdict.defer(
        "quiet_hours",
        f"{local:%H:%M} is within quiet hours {start:%H:%M}-{end:%H:%M} ({ctx.practice_timezone}); "
        f"deferred to {until:%Y-%m-%d %H:%M}",
        until.astimezone(ZoneInfo("UTC")),
    )


@hookimpl
def vethub_contact_verdict(context: ContactContext) -> Verdict:
    ctx = context
    client = ctx.client
    if client is not None and ctx.category != "account":
        if not client.active:
            return Verdict.veto("client_inactive", f"client {client.name} is not active in the PIMS")
        if ctx.patient_related and client.active_patients == 0:
            return Verdict.veto(
                "no_active_patient", f"client {client.name} has no active patient"
            )
        if client.comms_disabled:
            return Verdict.veto(
                "pims_comms_disabled", f"communications are disabled for {client.name} in the PIMS"
            )
        if ctx.preference is False:
            return Verdict.veto(
                "preference_opt_out",
                f"{client.name} does not want {ctx.category} messages by {ctx.channel}"
                f" (source: {ctx.preference_source})",
            )
        if ctx.preference is None and ctx.category in ctx.require_opt_in:
            return Verdict.veto(
                "no_opt_in", f"{ctx.category} messages need an opt-in, and {client.name} gave none"
            )
    for check in (_suppressed, _usable_address):
        verdict = check(ctx)
        if verdict is not None:
            return verdict
    if client is not None and ctx.category != "account":
        verdict = _quiet(ctx)
        if verdict is not None:
            return verdict
    return Verdict.allow(Reason("eligible", f"may be contacted by {ctx.channel} for {ctx.category}"))
