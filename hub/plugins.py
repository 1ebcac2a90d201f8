"""The plugin manager: built-in plugins plus third-party ones found through entry points."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from hub import errors, hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vethub"

# Built-in features are plugins too. Order matters only for first-result hooks: later
# registrations are called first by pluggy, so a vendor's plugin overrides a built-in policy.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("imaging", "hub.imaging.plugin"),
    ("dicom", "plugins.dicom.plugin"),
    ("case_routing", "plugins.policies.routing"),
    ("sms", "plugins.channels.sms"),
    ("postcard", "plugins.channels.postcard"),
    ("messaging", "hub.messaging.plugin"),
    ("email", "plugins.channels.email"),
    ("maildir", "plugins.channels.maildir"),
    ("inbound", "plugins.inbound.plugin"),
    ("contact_policy", "plugins.policies.contact"),
    ("reminder_policy", "plugins.policies.reminders"),
    ("pims", "hub.pims.plugin"),
    ("clients", "hub.clients.plugin"),
    ("ezyvet", "connectors.ezyvet"),
    ("file_export", "connectors.file_export"),
    ("accounts", "hub.accounts.plugin"),
    ("switching", "plugins.policies.switching"),
    ("onboarding_fields", "plugins.policies.onboarding"),
    ("operations", "hub.ops.plugin"),
)

#: The hub's own domains (the built-ins that live in the ``hub`` package): the core imports
#: them, reads their tables and sections and queues their jobs (accounts mail through
#: messaging, imaging routes to accounts, clients read the PIMS tables, jobs report to
#: operations), so the hub cannot run without them and ``plugins.disabled`` refuses them.
#: Everything else built in (DICOM, channels, inbound email, connectors, the policies, whose
#: absence the core answers with a safe default) may be disabled.
CORE_PLUGINS: frozenset[str] = frozenset(
    name for name, module in BUILTIN_PLUGINS if module.startswith("hub."))


def core_plugins_named(disabled: Iterable[str]) -> list[str]:
    """The names in ``disabled`` that are core plugins, sorted."""
    return sorted(set(disabled) & CORE_PLUGINS)


def core_refusal(names: Iterable[str]) -> str:
    """Why ``names`` (core plugins) cannot be disabled, and what can be."""
    optional = sorted(name for name, _ in BUILTIN_PLUGINS if name not in CORE_PLUGINS)
    return (f"{', '.join(names)} cannot be disabled: the hub's core plugins "
            f"({', '.join(sorted(CORE_PLUGINS))}) are part of the hub itself; "
            f"built-ins that may be disabled: {', '.join(optional)}")


class PluginError(errors.PluginError, RuntimeError):
    """A plugin could not be loaded or validated; the message names the plugin."""


@dataclass(frozen=True)
class PluginInfo:
    """What the hub knows of a loaded plugin: where it came from and which hooks it implements."""
    name: str
    origin: str  # "built-in" or "distribution NAME"
    version: str
    module: str
    hooks: tuple[str, ...] = field(default=())


class HubPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("vethub")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, tuple[str, str, str]] = {}

    def describe(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            origin, version, module = self.origins.get(name, ("registered", "", repr(plugin)))
            hooks = tuple(sorted(h.name for h in self.get_hookcallers(plugin) or ()))
            infos.append(PluginInfo(name, origin, version, module, hooks))
        return sorted(infos, key=lambda i: (i.origin != "built-in", i.name))


def _vethub_version() -> str:
    try:
        from importlib.metadata import version

        return version("vethub")
    except Exception:  # running from a source tree without install
        return "0+unknown"


def _register(pm: HubPluginManager, name: str, plugin: Any, origin: str, version: str, module: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin {name!r} ({origin}): {err}") from err
    except ValueError as err:  # duplicate name
        raise PluginError(f"plugin {name!r} ({origin}): {err}") from err
    pm.origins[name] = (origin, version, module)


def get_plugin_manager(
    disabled: Iterable[str] = (),
    *,
    builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
    load_entry_points: bool = True,
    extra: Iterable[tuple[str, Any]] = (),
) -> HubPluginManager:
    """Build a fresh plugin manager.

    Each plugin is imported and registered inside its own try, so one broken plugin is
    reported by name rather than escaping as an anonymous ImportError, and disabled plugins
    are never imported at all.
    """
    disabled = set(disabled)
    core = core_plugins_named(disabled) if builtins is BUILTIN_PLUGINS else []
    if core:  # load_config reports this as a ConfigError; this guards every other caller
        raise PluginError(f"plugins.disabled: {core_refusal(core)}")
    pm = HubPluginManager()
    version = _vethub_version()
    for name, module_path in builtins:
        if name in disabled:
            pm.set_blocked(name)
            continue
        try:
            module = importlib.import_module(module_path)
        except Exception as err:
            raise PluginError(f"built-in plugin {name!r} failed to import ({module_path}): {err}") from err
        _register(pm, name, module, "built-in", version, module_path)

    if load_entry_points:
        for ep in _entry_points():
            if ep.name in disabled:
                pm.set_blocked(ep.name)
                continue
            dist = ep.dist.name if ep.dist else "unknown"
            dist_version = ep.dist.version if ep.dist else ""
            try:
                plugin = ep.load()
            except Exception as err:
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist} failed to load ({ep.value}): "
                    f"{type(err).__name__}: {err}"
                ) from err
            _register(pm, ep.name, plugin, f"distribution {dist}", dist_version, ep.value)

    for name, plugin in extra:
        if name not in disabled:
            _register(pm, name, plugin, "registered", "", repr(plugin))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin {_plugin_name(pm, err.plugin)!r}: {err}") from err
    unknown = disabled - {n for n, _ in builtins} - {ep.name for ep in _entry_points()} - {n for n, _ in extra}
    if unknown:
        log.warning("plugins.disabled names unknown plugins: %s", ", ".join(sorted(unknown)))
    return pm


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _plugin_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    return pm.get_name(plugin) or repr(plugin)
