"""Third-party plugins found through a real entry point, listed, disabled, and broken."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hub.config import ConfigError, load_config
from hub.plugins import BUILTIN_PLUGINS, CORE_PLUGINS, PluginError, get_plugin_manager

GOOD = '''
from pydantic import BaseModel, ConfigDict
from hub.hookspecs import hookimpl

class AcmeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    colour: str = "blue"

@hookimpl
def vethub_config_sections():
    return {"acme": AcmeConfig}

@hookimpl
def vethub_onboarding_missing_fields(request, company):
    return ["acme_reference"] if not request.get("acme_reference") else []
'''


def make_distribution(root: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """Write a module and an installed distribution's metadata, as pip would."""
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[vethub]\n{ep_name} = {module}\n", encoding="utf-8")


@pytest.fixture
def acme_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "vethub_acme", "acme", "vethub_acme_plugin", GOOD)
    monkeypatch.syspath_prepend(str(root))
    return root


def test_entry_point_plugin_is_loaded_and_listed(acme_path: Path) -> None:
    pm = get_plugin_manager()
    info = {i.name: i for i in pm.describe()}["acme"]
    assert info.origin == "distribution vethub_acme"
    assert info.version == "1.2.3"
    assert "vethub_onboarding_missing_fields" in info.hooks
    # every implementation counts: the built-in required fields and the house rule
    assert ["acme_reference"] in pm.hook.vethub_onboarding_missing_fields(request={}, company=None)


def test_entry_point_plugin_section_is_validated(acme_path: Path) -> None:
    config = load_config("<t>", data={"acme": {"colour": "red"}}, env={})
    assert config.section("acme").colour == "red"
    with pytest.raises(ConfigError) as info:
        load_config("<t>", data={"acme": {"color": "red"}}, env={})
    [problem] = info.value.problems
    assert problem.key == "acme.color"
    assert "did you mean 'colour'" in problem.message and "[plugin acme]" in problem.message


def test_disabled_plugin_is_not_imported(acme_path: Path) -> None:
    sys.modules.pop("vethub_acme_plugin", None)
    pm = get_plugin_manager(["acme"])
    assert "acme" not in {i.name for i in pm.describe()}
    assert pm.is_blocked("acme")
    assert "vethub_acme_plugin" not in sys.modules
    # with the plugin disabled its section is unknown, and says so
    with pytest.raises(ConfigError, match="acme: unknown section"):
        load_config("<t>", data={"plugins": {"disabled": ["acme"]}, "acme": {}}, env={})


def test_cli_lists_and_disables(acme_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(acme_path)}
    out = subprocess.run([sys.executable, "-m", "hub.cli", "plugins"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("acme"))
    assert "1.2.3" in line and "distribution vethub_acme" in line and "vethub_config_sections" in line

    config = tmp_path / "vethub.toml"
    config.write_text('[plugins]\ndisabled = ["acme"]\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "hub.cli", "plugins", "--config", str(config)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True).stdout
    assert any(ln.startswith("acme") and "disabled by config" in ln for ln in out.splitlines())


def test_broken_plugin_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "vethub_broken", "broken", "vethub_broken_plugin", "import not_a_module_at_all\n")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "vethub_broken" in message and "not_a_module_at_all" in message

    (tmp_path / "x.toml").write_text("", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config", str(tmp_path / "x.toml")],
                            env={**os.environ, "PYTHONPATH": str(root)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "'broken'" in result.stderr and "Traceback" not in result.stderr


def test_hook_with_no_spec_stops_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "vethub_typo", "typo", "vethub_typo_plugin",
                      "from hub.hookspecs import hookimpl\n\n@hookimpl\ndef vethub_chanels(hub):\n    return []\n")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError, match=r"typo.*vethub_chanels"):
        get_plugin_manager()


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[database]\nurl = "sqlite+aiosqlite:///./var/x.db"\n', encoding="utf-8")
    ok = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config", str(good)],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "plugins enabled:" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = "x"\n[jobs]\nworkers = -1\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config", str(bad)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}: http.port:" in result.stderr and f"{bad}: jobs.workers:" in result.stderr


OPTIONAL_BUILTINS = [name for name, _ in BUILTIN_PLUGINS if name not in CORE_PLUGINS]


def test_core_plugins_are_the_hubs_own_domains() -> None:
    # a change here is a decision about what the hub can run without: docs/configuration.md
    assert CORE_PLUGINS == {"accounts", "clients", "imaging", "messaging", "operations", "pims"}
    assert {"dicom", "sms", "email", "inbound", "ezyvet", "file_export", "case_routing"} <= set(
        OPTIONAL_BUILTINS)


def test_disabling_a_core_plugin_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("<t>", data={"plugins": {"disabled": ["messaging", "sms"]},
                                 "messaging": {}}, env={})
    # one problem, on the key the operator wrote: the core section does not also read as unknown
    [problem] = info.value.problems
    assert problem.key == "plugins.disabled"
    assert "messaging cannot be disabled" in problem.message
    assert "may be disabled: " in problem.message and "sms" in problem.message
    # and every other way to a plugin manager refuses it too
    with pytest.raises(PluginError, match="accounts cannot be disabled"):
        get_plugin_manager(["accounts"])


def test_check_config_refuses_a_core_plugin(tmp_path: Path) -> None:
    config = tmp_path / "vethub.toml"
    config.write_text('[plugins]\ndisabled = ["imaging"]\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config", str(config)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "plugins.disabled" in result.stderr and "imaging cannot be disabled" in result.stderr


async def test_hub_runs_with_every_optional_builtin_disabled(hub_factory: Any) -> None:
    hub = await hub_factory({"plugins": {"disabled": OPTIONAL_BUILTINS}})
    loaded = {name for name, plugin in hub.pm.list_name_plugin() if plugin is not None}
    assert loaded == set(CORE_PLUGINS)
    assert all(hub.pm.is_blocked(name) for name in OPTIONAL_BUILTINS)
