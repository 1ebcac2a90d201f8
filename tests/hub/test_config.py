"""Configuration: every broken config is reported with its file, dotted key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, load_config
from hub.testing.fixtures_core import dump_toml

BASE = """
[database]
url = "sqlite+aiosqlite:///./var/t.db"

[[companies]]
slug = "rads"
name = "Rads"

[[practices]]
slug = "demo"
name = "Demo clinic"
calling_aes = ["DEMOCLINIC"]

[[accounts]]
practice = "demo"
company = "rads"
"""

# (toml appended to or replacing BASE, expected dotted key, expected words in the message)
BROKEN = [
    ("[databse]\nurl = 'x'\n", "databse", "did you mean 'database'"),
    ("[http]\nport = 'eighty'\n", "http.port", "integer"),
    ("[http]\nport = 70000\n", "http.port", "65535"),
    ("[http]\nhots = '0.0.0.0'\n", "http.hots", "did you mean 'host'"),
    ("[jobs]\nworkers = -1\n", "jobs.workers", "greater than or equal to 0"),
    ("[logging]\nlevel = 'LOUD'\n", "logging.level", "'DEBUG'"),
    ("[[practices]]\nslug = 'second'\nname = 'Second'\ntimezone = 'Mars/Olympus'\n", "practices[1].timezone", "IANA time zone"),
    ("[[practices]]\nslug = 'second'\n", "practices[1].name", "required key is missing"),
    ("[[practices]]\nslug = 'Bad Slug'\nname = 'x'\n", "practices[1].slug", "pattern"),
    ("[[accounts]]\npractice = 'nowhere'\ncompany = 'rads'\n", "accounts[1].practice", "no practice with slug 'nowhere'"),
    ("[[accounts]]\npractice = 'demo'\ncompany = 'radz'\n", "accounts[1].company", "did you mean 'rads'"),
    ("[[practices]]\nslug = 'other'\nname = 'Other'\ncalling_aes = ['DEMOCLINIC']\n", "practices[1].calling_aes", "already used"),
    ("[[practices]]\nslug = 'other'\nname = 'Other'\ncalling_aes = ['WAY_TOO_LONG_AE_TITLE']\n", "practices[1].calling_aes", "1-16"),
    ("[hub]\nsecret_key = '${VETHUB_TEST_UNSET_SECRET}'\n", "hub.secret_key", "VETHUB_TEST_UNSET_SECRET is not set"),
    ("[[companies]]\nslug = 'rads'\nname = 'Dup'\n", "companies[1].slug", "duplicate slug"),
    ("[[companies]]\nslug = 'x'\nname = 'X'\n[companies.destination]\nhost = 'pacs'\nport = 0\nae_title = 'PACS'\n",
     "companies[1].destination.port", "greater than or equal to 1"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vethub.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("extra", "key", "words"), BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_config_names_file_key_and_reason(tmp_path: Path, extra: str, key: str, words: str) -> None:
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = {p.key: p for p in info.value.problems}
    assert key in problems, f"expected a problem at {key}, got {[str(p) for p in info.value.problems]}"
    assert problems[key].file == str(path)
    assert words in problems[key].message
    assert f"{path}: {key}: " in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[http]\nport = 'x'\nhots = 1\n[jobs]\nworkers = -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert {p.key for p in info.value.problems} >= {"http.port", "http.hots", "jobs.workers"}


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[http\nport=1"), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_env_expansion_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[hub]\nsecret_key = '${SECRET}'\npublic_url = '${URL:-https://hub.example}'\n")
    config = load_config(path, env={"SECRET": "s3cret-that-is-at-least-32-bytes-long"})
    assert config.hub.secret_key.get_secret_value() == "s3cret-that-is-at-least-32-bytes-long"
    assert config.hub.public_url == "https://hub.example"
    assert "s3cret" not in str(config.redacted())


def test_valid_config_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), env={})
    again = load_config(write(tmp_path, dump_toml(config.model_dump(mode="json", exclude={"hub": {"secret_key"}}, exclude_none=True))), env={})
    assert again.model_dump() == config.model_dump()
    assert again.accounts[0].practice == "demo" and again.practices[0].calling_aes == ["DEMOCLINIC"]


def test_config_example_is_valid() -> None:
    example = Path(__file__).parents[2] / "config.example.toml"
    config = load_config(example, env={})
    assert config.practices and config.practices[0].calling_aes == ["DEMOCLINIC"]
    assert config.database.url.startswith("sqlite+aiosqlite")
