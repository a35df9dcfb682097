"""Each setting of `mandate serve` is declared once (mandate.config.SETTINGS): its Config field,
environment variable, flag, help and default. The variable, the flag, `--help` and the README's
table all come from that one declaration."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path

import pytest
from mandate import cli
from mandate.config import SETTINGS, Config, add_flags

from tests import settings_doc


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(list(argv))


def test_every_config_field_is_declared_once():
    names = [s.name for s in SETTINGS if s.name]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Config))
    assert len(set(names)) == len(names)
    for key in ("env", "flag"):
        values = [getattr(s, key) for s in SETTINGS if getattr(s, key)]
        assert len(set(values)) == len(values), key


def test_the_readme_settings_table_is_current():
    assert settings_doc.main(["--check"]) == 0, "run .venv/bin/python -m tests.settings_doc"


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
    ({"MANDATE_INVITATION_TTL": "2d"}, ["--invitation-ttl", "3d"], "invitation_ttl", datetime.timedelta(days=3)),
    ({"MANDATE_HISTORY_MEMORY": "0"}, [], "history_memory_mib", 0),
    ({"MANDATE_LOG_FORMAT": "json"}, [], "log_format", "json"),
    ({"MANDATE_API_TOKENS": " a , b ,"}, [], "api_tokens", ["a", "b"]),
    ({"MANDATE_LISTEN": "  "}, [], "listen", Config().listen),  # blank: the default
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
])
def test_a_bad_value_names_its_flag_or_variable(argv, env, named):
    with pytest.raises(ValueError, match=f"^{named}: "):
        Config.from_env(env).override(parsed(*argv))
