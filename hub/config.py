"""Configuration: TOML, ${VAR} expansion, validation of the core's and every plugin's sections.

Every problem is collected and reported at once, each with the file, the dotted key and what
was expected, so an operator fixes a config in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hub import errors

log = logging.getLogger(__name__)

ENV_VAR = "VETHUB_CONFIG"
DEFAULT_PATH = "vethub.toml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file, reported with the file and key to fix."""
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class ConfigError(errors.ConfigError):
    """One or more configuration problems; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Section(BaseModel):
    """Base of every config table: an unknown key is an error, so a typo does not pass silently."""
    model_config = ConfigDict(extra="forbid")


DEFAULT_SECRET_KEY = "dev-insecure-change-me"
MIN_SECRET_BYTES = 32


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HubSection(Section):
    """The [hub] table: the hub's name, public URL, signing key and data directory."""
    name: str = "VetHub"
    public_url: str = Field("http://127.0.0.1:8080", description="URL the outside world reaches the hub at")
    secret_key: SecretStr = Field(SecretStr(DEFAULT_SECRET_KEY), description="signs links and tokens")
    data_dir: Path = Path("./var")

    @model_validator(mode="after")
    def _strong_secret(self) -> HubSection:
        """A well-known or short key lets anyone forge the hub's signed links: refused as soon as
        the hub is reachable beyond this machine, a warning on loopback (the quick start)."""
        key = self.secret_key.get_secret_value()
        if key != DEFAULT_SECRET_KEY and len(key.encode()) >= MIN_SECRET_BYTES:
            return self
        what = "is the well-known default" if key == DEFAULT_SECRET_KEY else f"is shorter than {MIN_SECRET_BYTES} bytes"
        if not is_loopback_url(self.public_url):
            raise ValueError(f"secret_key {what}; public_url {self.public_url} is not a loopback address, so "
                             "set a random key of at least 32 bytes (e.g. from `openssl rand -hex 32`)")
        log.warning("[hub] secret_key %s: fine on loopback, refused once public_url is not", what)
        return self


class DatabaseSection(Section):
    """The [database] table: the SQLite or PostgreSQL URL."""
    url: str = "sqlite+aiosqlite:///./var/vethub.db"

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value


class HttpSection(Section):
    """The [http] table: where the hub listens and which reverse proxies it believes."""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of reverse proxies whose X-Forwarded-For is believed")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value


class JobsSection(Section):
    """The [jobs] table: worker count, leases, polling and retry backoff of the job queue."""
    workers: int = Field(2, ge=0, le=64, description="worker tasks in this process")
    lease_seconds: float = Field(60.0, gt=0)
    poll_interval: float = Field(0.5, gt=0)
    max_attempts: int = Field(8, ge=1)
    claim_batch: int = Field(1, ge=1, le=100, description="jobs a worker claims at once and runs concurrently")
    backoff_initial: float = Field(2.0, gt=0)
    backoff_max: float = Field(3600.0, gt=0)
    shutdown_grace: float = Field(20.0, ge=0)


class LoggingSection(Section):
    """The [logging] table: level and text or JSON output."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class PluginsSection(Section):
    """The [plugins] table: built-in or installed plugins to leave off."""
    disabled: list[str] = Field(default_factory=list)

    @field_validator("disabled")
    @classmethod
    def _not_core(cls, value: list[str]) -> list[str]:
        from hub.plugins import core_plugins_named, core_refusal  # hub.plugins imports the hooks

        core = core_plugins_named(value)
        if core:
            raise ValueError(core_refusal(core))
        return value


class DicomDestination(Section):
    """A DICOM node cases are sent to: host, port and AE title."""
    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(min_length=1, max_length=16)


class CompanyConfig(Section):
    """A reading company declared in config: what it reads, where its cases go, its turnaround."""
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str
    email: str | None = None
    modalities: list[str] = Field(default_factory=list)
    destination: DicomDestination | None = None
    auto_approve: bool = False
    # Cases: where case notifications go (default: email), hours to report per urgency, and
    # the AE title the company sends reports back from.
    reading_email: str | None = None
    turnaround_hours: dict[Literal["routine", "priority", "stat"], float] = Field(default_factory=dict)
    report_ae: str | None = Field(None, min_length=1, max_length=16)


class PracticeConfig(Section):
    """A practice in config: contact details, time zone, calling AE titles, PIMS connectors."""
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str
    email: str | None = None
    phone: str | None = None
    country: str = Field("US", pattern=r"^[A-Z]{2}$")
    timezone: str = "UTC"
    calling_aes: list[str] = Field(default_factory=list)
    address: dict[str, str] = Field(default_factory=dict)
    pims: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as 'Europe/London', got {value!r}") from None
        return value

    @field_validator("calling_aes")
    @classmethod
    def _ae_titles(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[ -~]{1,16}", v) or v.strip() != v or "\\" in v:
                raise ValueError(f"expected AE titles of 1-16 printable characters without padding, got {v!r}")
        return values


class AccountConfig(Section):
    """An account declared in config: which company reads which practice's studies."""
    practice: str
    company: str
    approved_for_access: bool = True
    modalities: list[str] = Field(default_factory=list)
    auto_submit: bool = False


class HubConfig(Section):
    """The whole validated configuration; plugins' own sections are validated and kept beside it."""
    hub: HubSection = Field(default_factory=HubSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    http: HttpSection = Field(default_factory=HttpSection)
    jobs: JobsSection = Field(default_factory=JobsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    companies: list[CompanyConfig] = Field(default_factory=list)
    practices: list[PracticeConfig] = Field(default_factory=list)
    accounts: list[AccountConfig] = Field(default_factory=list)

    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        return self._path

    def section(self, name: str) -> Any:
        """A plugin's validated section, or None when the file does not have it."""
        return self._sections.get(name)

    def redacted(self) -> dict[str, Any]:
        """The whole configuration as shown to people: secrets replaced by stars."""
        data = self.model_dump(mode="json")
        for name, model in self._sections.items():
            data[name] = model.model_dump(mode="json")
        return data


CORE_SECTIONS = tuple(HubConfig.model_fields)


# --- loading ----------------------------------------------------------------------------------


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "file not found (pass --config or set VETHUB_CONFIG)")]) from None
    except OSError as err:
        raise ConfigError([Problem(str(path), "", f"cannot read: {err.strerror}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([Problem(str(path), "", f"not valid TOML: {err}")]) from None


def expand_env(value: Any, env: Mapping[str, str], key: str, problems: list[str | tuple[str, str]]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; an unset VAR without default is a problem."""
    if isinstance(value, str):
        def _sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append((key, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)"))
            return ""
        return _VAR.sub(_sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{key}.{k}" if key else k, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    return value


def dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validation_problems(
    file: str, err: ValidationError, prefix: tuple[int | str, ...], model: type[BaseModel], data: Any
) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            known = _fields_at(model, tuple(e["loc"])[:-1], data)
            msg = f"unknown key{_did_you_mean(str(e['loc'][-1]), known)}"
            if known:
                msg += f"; expected one of: {', '.join(known)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})" if not isinstance(e.get("input"), dict) else e["msg"]
        problems.append(Problem(file, dotted(loc), msg))
    return problems


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...], data: Any) -> list[str]:
    """The field names of the (nested) model found at loc, for suggestions."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    pm: Any = None,
    data: dict[str, Any] | None = None,
) -> HubConfig:
    """Load, expand and validate a configuration; raise ConfigError listing every problem.

    ``data`` validates an already-parsed mapping (tests, embedded defaults) under the name
    ``path`` or ``<memory>``.
    """
    from hub.plugins import CORE_PLUGINS, PluginError, get_plugin_manager

    file_path = resolve_path(path) if data is None else Path(path or "<memory>")
    file = str(file_path)
    raw = read_toml(file_path) if data is None else data
    env_problems: list[Any] = []
    raw = expand_env(raw, os.environ if env is None else env, "", env_problems)
    problems = [Problem(file, k, m) for k, m in env_problems]

    if pm is None:
        disabled = (raw.get("plugins") or {}).get("disabled", []) if isinstance(raw.get("plugins"), dict) else []
        try:
            # core names are reported by PluginsSection with the other problems: build the
            # manager without them so their sections do not also read as unknown
            pm = get_plugin_manager([d for d in disabled if d not in CORE_PLUGINS]
                                    if isinstance(disabled, list) else [])
        except PluginError as err:
            raise ConfigError([*problems, Problem(file, "plugins", str(err))]) from err

    section_models, section_problems = collect_section_models(pm, file)
    problems += section_problems

    core_raw = {k: v for k, v in raw.items() if k in CORE_SECTIONS}
    for key in raw:
        if key not in CORE_SECTIONS and key not in section_models:
            known = [*CORE_SECTIONS, *section_models]
            problems.append(Problem(file, key, f"unknown section{_did_you_mean(key, known)}; expected one of: {', '.join(known)}"))

    config: HubConfig | None = None
    try:
        config = HubConfig.model_validate(core_raw)
    except ValidationError as err:
        problems += validation_problems(file, err, (), HubConfig, core_raw)

    sections: dict[str, BaseModel] = {}
    for name, model in section_models.items():
        if name not in raw:
            continue
        try:
            sections[name] = model.model_validate(raw[name])
        except ValidationError as err:
            plugin = section_owner(pm, name)
            for p in validation_problems(file, err, (name,), model, raw[name]):
                problems.append(Problem(p.file, p.key, f"{p.message} [plugin {plugin}]"))

    if config is not None:
        problems += cross_check(file, config, pm)

    if problems:
        raise ConfigError(problems)
    assert config is not None
    config._sections = sections
    config._path = file_path if data is None else None
    return config


def collect_section_models(pm: Any, file: str) -> tuple[dict[str, type[BaseModel]], list[Problem]]:
    models: dict[str, type[BaseModel]] = {}
    problems = []
    for impl in pm.hook.vethub_config_sections.get_hookimpls():
        result = impl.function() or {}
        for name, model in result.items():
            if name in CORE_SECTIONS or name in models:
                problems.append(Problem(file, name, f"section claimed twice (plugin {impl.plugin_name})"))
                continue
            models[name] = model
    return models, problems


def section_owner(pm: Any, name: str) -> str:
    """The plugin of ``pm`` that declared section ``name`` (asked of that manager, not of a
    process-wide table another hub's plugins may have filled)."""
    for impl in pm.hook.vethub_config_sections.get_hookimpls():
        if name in (impl.function() or {}):
            return str(impl.plugin_name)
    return "?"


def cross_check(file: str, config: HubConfig, pm: Any) -> list[Problem]:
    """Checks between sections: references, duplicates, PIMS connector tables."""
    problems = []
    companies = {c.slug for c in config.companies}
    practices = {p.slug for p in config.practices}
    sections: tuple[tuple[str, Sequence[CompanyConfig | PracticeConfig]], ...] = (
        ("companies", config.companies), ("practices", config.practices))
    for kind, items in sections:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.slug in seen:
                problems.append(Problem(file, f"{kind}[{i}].slug", f"duplicate slug {item.slug!r}"))
            seen.add(item.slug)
    ae_seen: dict[str, str] = {}
    for i, p in enumerate(config.practices):
        for ae in p.calling_aes:
            if ae in ae_seen:
                problems.append(Problem(file, f"practices[{i}].calling_aes", f"AE title {ae!r} is already used by practice {ae_seen[ae]!r}"))
            ae_seen[ae] = p.slug
    for i, a in enumerate(config.accounts):
        if a.practice not in practices:
            problems.append(Problem(file, f"accounts[{i}].practice", f"no practice with slug {a.practice!r}{_did_you_mean(a.practice, sorted(practices))}"))
        if a.company not in companies:
            problems.append(Problem(file, f"accounts[{i}].company", f"no company with slug {a.company!r}{_did_you_mean(a.company, sorted(companies))}"))
    problems += check_pims_tables(file, config, pm)
    return problems


def pims_connector_classes(pm: Any) -> dict[str, type]:
    classes: dict[str, type] = {}
    for result in pm.hook.vethub_pims_connectors():
        for cls in result or ():
            classes[getattr(cls, "name", cls.__name__)] = cls
    return classes


def check_pims_tables(file: str, config: HubConfig, pm: Any) -> list[Problem]:
    problems = []
    classes = pims_connector_classes(pm)
    for i, practice in enumerate(config.practices):
        for j, table in enumerate(practice.pims):
            key = f"practices[{i}].pims[{j}]"
            name = table.get("connector")
            if not name:
                problems.append(Problem(file, f"{key}.connector", f"required key is missing; expected one of: {', '.join(sorted(classes)) or '(no connectors installed)'}"))
                continue
            cls = classes.get(name)
            if cls is None:
                problems.append(Problem(file, f"{key}.connector", f"unknown connector {name!r}{_did_you_mean(name, sorted(classes))}"))
                continue
            model = getattr(cls, "config_model", None)
            if model is None:
                continue
            rest = {k: v for k, v in table.items() if k != "connector"}
            try:
                model.model_validate(rest)
            except ValidationError as err:
                problems += validation_problems(file, err, (f"{key}",), model, rest)
    return problems
