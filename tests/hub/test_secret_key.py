"""The well-known default (or a short) secret key is refused once the hub is reachable beyond
loopback, by start-up and by `vethub check-config`; on loopback it only warns."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import ConfigError, load_config

STRONG = "k" * 32


def write(tmp_path: Path, url: str, key: str | None) -> Path:
    path = tmp_path / "vethub.toml"
    lines = ["[hub]", f'public_url = "{url}"']
    if key is not None:
        lines.append(f'secret_key = "{key}"')
    lines += ["[database]", f'url = "sqlite+aiosqlite:///{tmp_path}/x.db"']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("key", [None, "dev-insecure-change-me", "short-but-random-31-bytes-xxxxx"],
                         ids=["unset", "default", "short"])
@pytest.mark.parametrize("url", ["https://hub.example.com", "http://10.0.0.5:8080", "http://0.0.0.0:8080"])
def test_weak_key_refused_beyond_loopback(tmp_path, url, key) -> None:
    with pytest.raises(ConfigError, match="secret_key"):
        load_config(write(tmp_path, url, key), env={})
    result = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config",
                             str(write(tmp_path, url, key))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "secret_key" in result.stderr + result.stdout


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"])
def test_weak_key_warns_on_loopback(tmp_path, url, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.config"):
        config = load_config(write(tmp_path, url, None), env={})
    assert config.hub.public_url == url
    assert any("secret_key" in r.getMessage() for r in caplog.records)


def test_strong_key_accepted_anywhere(tmp_path) -> None:
    config = load_config(write(tmp_path, "https://hub.example.com", STRONG), env={})
    assert config.hub.secret_key.get_secret_value() == STRONG
