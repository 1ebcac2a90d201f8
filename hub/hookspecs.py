"""Every extension point of VetHub: the plugin author's manual.

A plugin is a module (or object) with functions decorated ``@hookimpl`` whose names match
the specs below. Hooks are **synchronous**: pluggy does not await, so

- a *registration* hook returns objects (connector classes, channels, route tables) whose
  methods are ``async``;
- a *policy* hook is a pure decision over data the core gathered and passes in — no I/O;
- a *lifecycle* or *event* hook may return an awaitable, which the core awaits.

Never write ``async def`` for a hook implementation: a ``firstresult`` call would stop at the
first coroutine, unawaited. The plugin manager refuses implementations that match no spec.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from aiohttp import web
    from pydantic import BaseModel

    from hub.accounts.policy import Decision, SwitchFacts, SwitchRequestLike
    from hub.core import Hub
    from hub.db.models import Company
    from hub.imaging.case_status import CaseStatusEvent
    from hub.imaging.routing import AccountFacts, CaseRequest, RouteDecision, StudyFacts
    from hub.imaging.transport import ImageTransport
    from hub.jobs import JobHandler, JobKind
    from hub.messaging.channel import Channel
    from hub.messaging.verdict import ContactContext, Verdict
    from hub.pims.connector import PimsConnector

HOOK_API_VERSION = (1, 2)
"""The version of this hook API as (major, minor).

A minor step adds hooks or optional arguments; a major step changes or removes one. A plugin
that needs a hook added in 1.1 checks ``hub.hookspecs.HOOK_API_VERSION >= (1, 1)``; the plugin
manager refuses an implementation whose spec does not exist (so a plugin written for a newer
minor fails loudly on an older hub, naming the hook).
"""

hookspec = pluggy.HookspecMarker("vethub")
hookimpl = pluggy.HookimplMarker("vethub")


# ---------------------------------------------------------------------------------------------
# Configuration and registration
# ---------------------------------------------------------------------------------------------


@hookspec
def vethub_config_sections() -> Mapping[str, type[BaseModel]]:
    """Declare the top-level TOML sections this plugin owns and their schema.

    Called once while the configuration is loaded, before anything starts.

    :returns: a mapping of section name (``"dicom"``, ``"sms"``) to a pydantic model class. The
        validated instance is available at run time as ``hub.config.section(name)`` (``None``
        when the section is absent). Unknown keys inside a section are reported as errors, so
        declare the model with ``extra="forbid"``. Mark secrets with ``pydantic.SecretStr`` so
        they are redacted wherever config is shown.

    Every plugin's result counts; two plugins claiming the same section is a start-up error.
    """


@hookspec
def vethub_job_handlers() -> Mapping[str, JobHandler | JobKind]:
    """Register handlers for durable job kinds.

    Called once at start-up.

    :returns: a mapping of job kind (``"dicom.forward_case"``) to ``async def handler(hub, job)``.
        A handler raises :class:`hub.jobs.PermanentJobError` to send the job to the dead letter
        at once, :class:`hub.jobs.RetryAfter` to retry after a given delay, and any other
        exception to retry with exponential backoff. Delivery is at least once: handlers must be
        idempotent (use the provider's idempotency key where there is one).

        A job that stands for a domain object maps its kind to a :class:`hub.jobs.JobKind`
        instead, ``JobKind(handler, on_dead=fn)``: when the job goes dead (failed
        ``max_attempts`` times, abandoned by crashed workers, or a permanent error),
        ``await fn(session, hub, job, reason)`` runs in the transaction that marks it dead and
        takes the object to its terminal failed state, so nothing stays "in progress" behind
        a dead job.

    Every plugin's result counts; a kind registered twice is a start-up error.
    """


@hookspec
def vethub_web_routes(hub: Hub) -> Sequence[web.AbstractRouteDef]:
    """Add HTTP routes to the hub's aiohttp application.

    Called once while the app is built.

    :param hub: the running hub (``request.app[HUB_KEY]`` gives the same object in handlers).
    :returns: route definitions. Routes under ``/api`` are declared on a
        :class:`hub.web.contract.ApiRoutes` table (``routes = ApiRoutes(tag="acme")``, then
        ``@routes.post(path, summary=..., body=Model, query=Model, path_params=Model,
        response=Model, status=201, errors=(404, 409))`` with pydantic models that subclass
        ``RequestModel`` / ``ResponseModel``): the core validates the request before the
        handler runs, answers bad input in the one error envelope, and lists the route with
        its models in ``/api/openapi.json`` (a test fails for an undeclared ``/api`` route).
        They require a bearer token unless declared ``public=True``. Routes elsewhere
        (webhooks, pages) may be a plain ``web.RouteTableDef``; they are open and must check
        their own signatures.

    Every plugin's result counts.
    """


@hookspec
def vethub_cli_commands() -> Sequence[click.Command]:
    """Add commands to the ``vethub`` command line.

    Called when the CLI starts. Use :func:`hub.cli_support.with_hub` to run a coroutine against
    a started hub from a command.

    :returns: click commands or groups. Every plugin's result counts.
    """


@hookspec
def vethub_template_dirs() -> Sequence[Path]:
    """Add folders of Jinja2 message templates.

    Called once per hub, the first time a message is rendered. A template named ``welcome``
    is a set of files in one of these folders: ``welcome.subject.j2``, ``welcome.txt.j2`` and
    optionally ``welcome.html.j2`` (email); ``welcome.sms.j2`` (SMS);
    ``welcome.front.html.j2`` and ``welcome.back.html.j2`` (postcard). ``.html.j2`` files are
    autoescaped; an undefined variable is an error. Every template also receives ``client``,
    ``practice``, ``preferences_url`` and ``unsubscribe_url`` (``None`` when not applicable).

    :returns: folders (:class:`pathlib.Path`) searched after a practice's own overrides
        (``<messaging.templates_dir>/<practice slug>/``) and before the core's defaults
        (``hub/messaging/templates/``). Every plugin's result counts; earlier-registered
        plugins are searched first.
    """


@hookspec
def vethub_health_checks(hub: Hub) -> Mapping[str, Callable[[], Awaitable[tuple[bool, str]]]]:
    """Contribute readiness checks to ``GET /readyz``.

    Called on every readiness request.

    :param hub: the running hub.
    :returns: a mapping of check name (``"dicom:listener"``, ``"pims:demo-clinic/ezyvet"``) to an
        ``async`` callable returning ``(ok, detail)``. Each check gets five seconds; an exception
        or a timeout counts as not ready. Every plugin's result counts.
    """


# ---------------------------------------------------------------------------------------------
# The four plugin kinds
# ---------------------------------------------------------------------------------------------


@hookspec
def vethub_pims_connectors() -> Sequence[type[PimsConnector]]:
    """Register PIMS connector classes.

    Called at start-up. A connector class has a ``name`` (the ``connector`` key of a
    ``[[practices.pims]]`` table), a ``config_model`` (pydantic) for the rest of that table, and
    is built per practice from it. It yields typed change batches since a checkpoint and has
    an async health check (see :mod:`hub.pims.connector` for the ``Protocol``). The core owns
    upserts, checkpoints and the quarantine of bad records.

    :returns: connector classes. Every plugin's result counts.
    """


@hookspec
def vethub_image_transports(hub: Hub) -> Sequence[ImageTransport]:
    """Register image transports: how images come in and how routed cases go out.

    Called once when the hub starts, after the plugins' start-up hooks. Each object satisfies
    :class:`hub.imaging.transport.ImageTransport`: a ``name``; ``async start()`` and ``async
    stop()``, which the core calls with the hub (inbound: bind, receive, hand instances to the
    imaging service); a ``destination_key`` naming the key of a company's ``settings`` that
    this transport delivers to; and a ``delivery_job``, the job kind (registered by the same
    plugin through :func:`vethub_job_handlers`) that the core enqueues with ``{"case_id"}`` to
    deliver a routed case there. A company no transport delivers to gets its cases in the hub.

    :param hub: the hub being started.
    :returns: transport objects. Every plugin's result counts; two with one name is an error.
    """


@hookspec
def vethub_channels(hub: Hub) -> Sequence[Channel]:
    """Register messaging channels (email, sms, postcard).

    Called once at start-up, after configuration is loaded.

    :param hub: the hub, for configuration (``hub.config.section(...)``) and ``hub.http``.
    :returns: channel objects satisfying :class:`hub.messaging.channel.Channel` (``name``,
        ``async send()``, ``routes()`` for webhooks, ``async health()``, ``async close()``).
        Return an empty list when the channel is not configured; say why in the log.

    Every plugin's result counts; two channels with the same name is a start-up error.
    """


# ---------------------------------------------------------------------------------------------
# Workflow policies: pure decisions over data the core passes in
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def vethub_switch_decision(request: SwitchRequestLike, facts: SwitchFacts) -> Decision | None:
    """Decide what happens to a practice's request to switch companies.

    Called when a switch request is submitted, when the current company answers, when an
    operator decides after an objection, and when the response deadline passes (a durable job).
    The built-in rules are ``plugins/policies/switching.py``; register a house rule with
    ``@hookimpl(tryfirst=True)`` to answer before them.

    :param request: the :class:`hub.accounts.models.SwitchRequest` row (read it, do not change
        it): ``kind`` (``"move"`` or ``"add"``), ``modalities`` (for ``add``), the practice,
        the current and the new company, the requester and their written statement.
    :param facts: a :class:`hub.accounts.policy.SwitchFacts`: ``now`` (the hub's clock),
        ``requested_at``, ``last_case_at`` (the account's last case at or before the request),
        ``windows`` (activity, response, from ``[switching]``), ``notified_at``, ``deadline``,
        the current company's ``response`` (approve / object / none) and ``responded_at``, the
        ``operator_decision`` and the current account's modalities. Pure data: do no I/O.
    :returns: a :class:`hub.accounts.policy.Decision` (``outcome``, ``reason``, ``effect``,
        ``deadline``), or ``None`` to let the next implementation decide.
        **Stops at the first non-None result.**
    """


@hookspec
def vethub_contact_verdict(context: ContactContext) -> Verdict | None:
    """Judge whether one person may be contacted on one channel for one category.

    Called before every communication is recorded, and by the preview endpoint.

    :param context: a :class:`hub.messaging.verdict.ContactContext`, everything the core
        knows: ``channel``, ``category``, ``now``, the channel's ``address`` (email, E.164
        mobile, or ``postal_address``), ``client`` (:class:`~hub.messaging.verdict.ClientFacts`:
        active, comms_disabled, active_patients... or ``None`` for a practice or company),
        the client's ``preference`` for this category and channel from the consent ledger
        (``None`` when never stated), ``suppressions`` against the address (opt-outs, bounces),
        ``practice_timezone`` and the configured ``quiet_hours``. Pure data: do no I/O.
    :returns: a :class:`hub.messaging.verdict.Verdict` — ``Verdict.allow(...)``,
        ``Verdict.veto(code, message)`` or ``Verdict.defer(code, message, until)`` — or
        ``None`` to abstain. **Every result counts: any veto wins**, with its reason; a
        deferral wins over an allow. The verdict and all reasons, each with the name of the
        plugin that gave it, are stored with the communication.
    """


@hookspec(firstresult=True)
def vethub_route_case(
    case: CaseRequest, study: StudyFacts, accounts: Sequence[AccountFacts]
) -> RouteDecision | None:
    """Choose the account (and so the company) a submitted case goes to.

    :param case: the :class:`hub.imaging.routing.CaseRequest` being submitted.
    :param study: its :class:`hub.imaging.routing.StudyFacts`, with modalities.
    :param accounts: the practice's accounts (:class:`hub.imaging.routing.AccountFacts`), each
        with its company and the modalities it reads.
    :returns: a :class:`hub.imaging.routing.RouteDecision` (``RouteDecision.to(account_id,
        reason)`` or ``RouteDecision.refuse(reason)``), or ``None``.
        **Stops at the first non-None result.**
    """


@hookspec
def vethub_onboarding_missing_fields(request: Mapping[str, Any], company: Company | None) -> Sequence[str]:
    """Name the fields an account request still lacks.

    Called when a request is created and each time the practice adds information.

    :param request: a dict of the request's fields: ``practice_name``, ``contact_name``,
        ``email``, ``phone``, ``address`` (dict), ``pims``, ``imaging_software``,
        ``modalities`` (list), ``company_id`` and ``extra`` (answers to anything else).
    :param company: the :class:`hub.db.models.Company` it is addressed to, or ``None`` when the
        practice named none (its ``settings`` may require more).
    :returns: missing field names (``extra`` answers are looked up by the same names; see
        :func:`hub.accounts.policy.label` for how a name is shown to the practice).
        Every result counts: the union is what is asked for.
    """


@hookspec(firstresult=True)
def vethub_reminder_schedule(reminder: Any, practice: Any) -> Any:
    """Decide when and how a PIMS reminder is sent.

    Called by the reminder run (a durable periodic job) for each reminder the PIMS lists as
    due, inside the practice's sending hours. Each step is written once (its idempotency key is
    the reminder and the step's name) and sent only over a channel the contact verdict allows.
    The built-in policy (``plugins/policies/reminders.py``) contacts 28 and 7 days before and
    14 days after, by email, then SMS, then postcard.

    :param reminder: a :class:`hub.clients.schedule.ReminderFacts` (service, due date,
        patient status, species).
    :param practice: a :class:`hub.clients.schedule.PracticeReminderFacts` (time zone,
        sending hours).
    :returns: a :class:`hub.clients.schedule.ReminderSchedule` (steps and channel order), or
        ``None`` for the next implementation. **Stops at the first non-None result.**
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle and events: may return an awaitable, which the core awaits
# ---------------------------------------------------------------------------------------------


@hookspec
def vethub_startup(hub: Hub) -> Awaitable[None] | None:
    """Start the plugin's long-lived resources (a DICOM listener, a client session).

    Called once after the database is ready and before the hub serves requests. An exception
    stops start-up with the plugin's name. Every plugin's result is awaited.
    """


@hookspec
def vethub_shutdown(hub: Hub) -> Awaitable[None] | None:
    """Release what :func:`vethub_startup` started. Called once at shutdown, in reverse order."""


@hookspec
def vethub_instance_stored(hub: Hub, instance: Any) -> Awaitable[None] | None:
    """A DICOM instance was stored and committed (after C-STORE success was decided).

    Called on the event loop, once per instance, in the order the rows committed; the
    receiver neither waits for it before answering nor fails the instance if it raises. The
    calls for one committed batch are all made before any awaitable they return is awaited
    (:meth:`hub.core.Hub.fire_each`), so an implementation can do one piece of work for the
    batch and return it to each call.
    ``instance`` is a dict: ``instance_id``, ``study_id``, ``created`` (False for a re-sent
    instance), ``practice_id``, ``sop_instance_uid``, ``modality``. Return value ignored.
    """


@hookspec
def vethub_study_stable(hub: Hub, study: Any) -> Awaitable[None] | None:
    """A study received no new instance for ``stable_age`` seconds."""


@hookspec
def vethub_case_status(hub: Hub, change: CaseStatusEvent) -> Awaitable[None] | None:
    """A case's status changed (submitted, routed, delivered, reported, failed, cancelled).

    Fired after the change is committed, from a job written with it (at least once, in the
    order of the changes of one case), so a listener may open its own transaction. Added in
    hook API 1.2.

    :param change: a :class:`hub.imaging.case_status.CaseStatusEvent`: ``case_id``,
        ``practice_id``, ``company_id``, ``study_id``, ``status``, ``previous`` (None for a new
        case), ``actor`` (who made the change), ``at`` and ``note`` (for ``failed``, the reason).
    """


@hookspec
def vethub_client_synced(hub: Hub, client: Any) -> Awaitable[None] | None:
    """A client's data changed in a PIMS sync (created or updated)."""


@hookspec
def vethub_delivery_status(hub: Hub, communication: Any, status: str) -> Awaitable[None] | None:
    """A communication's status moved forward (sent, delivered, bounced...)."""


@hookspec
def vethub_account_changed(hub: Hub, account: Any, before: Any, after: Any) -> Awaitable[None] | None:
    """An account was created or changed (approved, suspended, switched).

    Fired after the change is committed, from a job written with it (at least once).

    :param account: the :class:`hub.db.models.Account` as it is now.
    :param before: the account's state before the change (``company_id``, ``practice_id``,
        ``approved_for_access``, ``modalities``, ``auto_submit``, ``status``), ``None`` when
        it was created.
    :param after: the same fields after the change.
    """
