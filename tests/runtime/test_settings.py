"""Each setting of `mandate serve` is declared once (mandate.runtime.config.SETTINGS): its Config field,
environment variable, flag, help and default. The variable, the flag, `--help` and the README's
table all come from that one declaration."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
from pathlib import Path

import pytest
from mandate import cli
from mandate.runtime.config import SETTINGS, Config, DatabaseSettings, add_flags

from tests import settings_doc


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(list(argv))


def test_every_config_field_is_declared_once():
    """The database's settings too: `database.pool_size` is Config.database.pool_size."""
    names = [s.name for s in SETTINGS if s.name]
    fields = [f.name for f in dataclasses.fields(Config) if f.name != "database"]
    fields += [f"database.{f.name}" for f in dataclasses.fields(DatabaseSettings)]
    assert sorted(names) == sorted(fields)
    assert len(set(names)) == len(names)
    for key in ("env", "flag"):
        values = [getattr(s, key) for s in SETTINGS if getattr(s, key)]
        assert len(set(values)) == len(values), key


def test_the_settings_tables_of_the_readme_and_docs_are_current():
    assert settings_doc.main(["--check"]) == 0, "run .venv/bin/python -m tests.settings_doc"
    deploying = (settings_doc.ROOT / "docs" / "deploying.md").read_text()
    assert "<!-- settings MANDATE_DATABASE_URL MANDATE_DATABASE_POOL_SIZE" in deploying


def documented(pattern: str) -> list[tuple[str, str]]:
    """(document, match) for each match of `pattern` in README.md and docs/*.md."""
    return [(document.name, match) for document in settings_doc.DOCUMENTS
            for match in re.findall(pattern, document.read_text())]


def test_every_variable_the_docs_name_exists():
    """A variable of the docs is a setting of `mandate serve` (SETTINGS) or one the command-line
    client reads (mandate.cli); none is made up or left behind by a rename."""
    client = set(re.findall(r'"(MANDATE_[A-Z_]+)"', Path(cli.__spec__.origin).read_text()))
    known = {setting.env for setting in SETTINGS} | client
    unknown = [(name, variable) for name, variable in documented(r"\bMANDATE_[A-Z_]*[A-Z]\b") if variable not in known]
    assert not unknown


def test_a_default_the_docs_state_in_prose_is_the_code_s():
    """`MANDATE_X` (`--x`, default V) in the docs' prose states the default SETTINGS shows."""
    shown = {setting.env: setting.shown.split()[0].strip("`") for setting in SETTINGS}
    stated = documented(r"`(MANDATE_[A-Z_]+)`[^|\n]{0,40}?\bdefault:? `?([^`\s,;)]+)")
    assert stated  # the pattern still finds some
    assert [(name, env, value) for name, (env, value) in stated if value != shown[env]] == []
    database = DatabaseSettings()
    connections = 3 * (database.pool_size + database.max_overflow + 1)
    deploying = (settings_doc.ROOT / "docs" / "deploying.md").read_text()
    assert f"3 replicas with the defaults need {connections}." in deploying


def test_every_flag_is_in_serve_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    shown = capsys.readouterr().out
    for setting in SETTINGS:
        if setting.name and setting.flag:
            assert setting.flag in shown and setting.env in shown, setting.flag


@pytest.mark.parametrize(("env", "argv", "field", "value"), [
    ({"MANDATE_WORKERS": "4"}, [], "workers", 4),
    ({"MANDATE_WORKERS": "4"}, ["--workers", "6"], "workers", 6),
    ({}, ["--callers", "c.toml"], "callers_file", Path("c.toml")),
    ({"MANDATE_INSECURE": "yes"}, [], "insecure", True),
    ({}, ["--insecure"], "insecure", True),
    ({}, ["--watch-policy"], "watch_policy", True),
    ({"MANDATE_WATCH_POLICY": "yes"}, [], "watch_policy", True),
    ({"MANDATE_INSECURE": "0"}, [], "insecure", False),
    ({"MANDATE_INSECURE": "off"}, ["--insecure"], "insecure", True),
    ({"MANDATE_INVITATION_TTL": "2d"}, ["--invitation-ttl", "3d"], "invitation_ttl", datetime.timedelta(days=3)),
    ({"MANDATE_HISTORY_MEMORY": "0"}, [], "history_memory_mib", 0),
    ({"MANDATE_LOG_FORMAT": "json"}, [], "log_format", "json"),
    ({"MANDATE_API_TOKENS": " a , b ,"}, [], "api_tokens", ["a", "b"]),
    ({"MANDATE_LISTEN": "  "}, [], "listen", Config().listen),  # blank: the default
    ({"MANDATE_DATABASE_POOL_SIZE": "3"}, [], "database", DatabaseSettings(pool_size=3)),
    ({"MANDATE_DATABASE_POOL_SIZE": "3"}, ["--database-pool-size", "4", "--database-max-overflow", "0"], "database",
     DatabaseSettings(pool_size=4, max_overflow=0)),
    ({"MANDATE_DATABASE_POOL_TIMEOUT": "0.5"}, ["--database-connect-timeout", "7"], "database",
     DatabaseSettings(pool_timeout=0.5, connect_timeout=7)),
    ({"MANDATE_GROUP_COMMIT": "off"}, [], "database", DatabaseSettings(group_commit=False)),
    ({"MANDATE_GROUP_COMMIT": "off"}, ["--group-commit", "on"], "database", DatabaseSettings()),
])
def test_a_flag_overrides_its_variable_which_overrides_the_default(env, argv, field, value):
    config = Config.from_env(env)
    config.override(parsed(*argv))
    assert getattr(config, field) == value


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--workers", "0"], {}, "--workers"),
    (["--workers", "x"], {}, "--workers"),
    (["--max-message-bytes", "10"], {}, "--max-message-bytes"),
    ([], {"MANDATE_MAX_MESSAGE_BYTES": "10"}, "MANDATE_MAX_MESSAGE_BYTES"),
    (["--log-format", "xml"], {}, "--log-format"),
    (["--database-pool-size", "0"], {}, "--database-pool-size"),
    ([], {"MANDATE_DATABASE_MAX_OVERFLOW": "-1"}, "MANDATE_DATABASE_MAX_OVERFLOW"),
    (["--database-pool-timeout", "0"], {}, "--database-pool-timeout"),
    ([], {"MANDATE_DATABASE_CONNECT_TIMEOUT": "2.5"}, "MANDATE_DATABASE_CONNECT_TIMEOUT"),
    (["--group-commit", "sometimes"], {}, "--group-commit"),
    ([], {"MANDATE_GROUP_COMMIT": "of"}, "MANDATE_GROUP_COMMIT"),
    # A switch's variable that is neither on nor off is refused, not taken as off.
    ([], {"MANDATE_INSECURE": "enabled"}, "MANDATE_INSECURE"),
    ([], {"MANDATE_WATCH_POLICY": "ture"}, "MANDATE_WATCH_POLICY"),
])
def test_a_bad_value_names_its_flag_or_variable(argv, env, named):
    with pytest.raises(ValueError, match=f"^{named}: "):
        Config.from_env(env).override(parsed(*argv))


def test_the_database_settings_of_the_environment_are_config_s():
    env = {"MANDATE_DATABASE_POOL_SIZE": "2", "MANDATE_GROUP_COMMIT": "no", "MANDATE_WORKERS": "x"}
    assert DatabaseSettings.from_env(env) == DatabaseSettings(pool_size=2, group_commit=False)
    assert DatabaseSettings.from_env({}) == DatabaseSettings() == Config().database


@pytest.mark.parametrize(("argv", "named"), [
    (["--database-pool-size", "x"], "--database-pool-size"),
    (["--group-commit", "maybe"], "--group-commit"),
])
def test_a_bad_database_flag_stops_the_start_in_one_line(monkeypatch, capsys, argv, named):
    def started(*_args, **_kwargs):
        raise AssertionError("mandate serve went on to start")

    monkeypatch.setattr(cli, "run_serve", started)
    assert cli.main(["serve", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mandate: {named}: "), lines
