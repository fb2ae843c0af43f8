"""Tests for bot.config: defaults, file resolution, validation messages and durations."""

import textwrap
import tomllib
from collections.abc import Mapping
from datetime import date, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from bot.config import (
    DEFAULTS_SOURCE,
    MAX_DURATION,
    Config,
    ConfigError,
    ConfigProblem,
    DatabaseConfig,
    Duration,
    EgovConfig,
    format_duration,
    load_config,
    parse_duration,
    resolve_config_path,
    validate_config,
)
from bot.core.platform import Capabilities
from bot.platforms.registry import PLATFORMS

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
NO_ENV: Mapping[str, str] = {}
SECRET = "s3cr3t-Value-0xCAFE"


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    """Write a config file with the given (dedented) TOML text."""
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, environ: Mapping[str, str] = NO_ENV) -> list[str]:
    """Load a config that must fail, returning its problems as printed lines."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ)
    return [str(problem) for problem in caught.value.problems]


# Embedded defaults


def test_no_file_means_embedded_defaults() -> None:
    loaded = load_config(None, NO_ENV)

    assert loaded.source == DEFAULTS_SOURCE == "<defaults>"
    assert loaded.config == Config.defaults()
    config = loaded.config
    assert config.bot.language == "zh-CN"
    assert config.bot.tz == ZoneInfo("Asia/Shanghai")
    assert config.bot.public_url == "http://127.0.0.1:8080"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.max_body_bytes == 1_048_576
    assert config.server.shutdown_timeout == timedelta(seconds=10)
    assert config.database.url == "sqlite+aiosqlite:///workbot.db"
    assert config.database.url_env is None
    assert config.database.auto_migrate is True
    assert (config.group.platform, config.group.chat_id) == ("local", "main")
    assert config.egov.secret_env == "WORKBOT_EGOV_SECRET"
    assert config.egov.callback_url == ""
    assert config.egov.max_skew_seconds == 300
    assert config.schedule.working_hours_span == (time(8, 30), time(17, 30))
    assert config.schedule.quiet_hours_span == (time(22, 0), time(7, 0))
    assert config.schedule.digest_time == time(9, 0)
    assert config.schedule.remind_before == (timedelta(days=1), timedelta(hours=2))
    assert config.schedule.reminders_per_person_per_day == 3
    assert config.schedule.escalate_after == timedelta(days=1)
    assert config.schedule.min_lead_time == timedelta(days=1)
    assert config.schedule.extra_holidays == config.schedule.extra_workdays == ()
    assert config.platforms.local.enabled is False
    assert (config.logging.level, config.logging.json_format) == ("INFO", False)


def test_empty_file_equals_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    loaded = load_config(path, NO_ENV)

    assert loaded.source == str(path)
    assert loaded.config == Config.defaults()


def test_config_is_frozen() -> None:
    config = Config.defaults()

    with pytest.raises(ValidationError):
        setattr(config.server, "port", 9000)  # noqa: B010


def test_dump_serializes_durations_as_strings_and_round_trips() -> None:
    config = Config.defaults()

    dumped = config.model_dump(mode="json", by_alias=True)

    assert dumped["server"]["shutdown_timeout"] == "10s"
    assert dumped["schedule"]["remind_before"] == ["1d", "2h"]
    assert dumped["logging"] == {"level": "INFO", "json": False}
    assert Config.model_validate(dumped) == config


# Resolution order: -c FILE > $WORKBOT_CONFIG > ./config.toml > defaults


def test_cli_path_wins_over_env_and_cwd(tmp_path: Path) -> None:
    cli = write(tmp_path, "", "cli.toml")
    env = write(tmp_path, "", "env.toml")
    write(tmp_path, "")

    resolved = resolve_config_path(cli, {"WORKBOT_CONFIG": str(env)}, tmp_path)

    assert resolved == cli


def test_env_var_wins_over_cwd_file(tmp_path: Path) -> None:
    env = write(tmp_path, "", "env.toml")
    write(tmp_path, "")

    assert resolve_config_path(None, {"WORKBOT_CONFIG": str(env)}, tmp_path) == env


def test_cwd_config_toml_is_used_when_nothing_is_named(tmp_path: Path) -> None:
    local = write(tmp_path, "")

    assert resolve_config_path(None, NO_ENV, tmp_path) == local


def test_defaults_when_there_is_no_file(tmp_path: Path) -> None:
    assert resolve_config_path(None, NO_ENV, tmp_path) is None
    assert resolve_config_path(None, {"WORKBOT_CONFIG": ""}, tmp_path) is None


def test_relative_cli_path_is_taken_from_cwd(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", "", "bot.toml")

    assert resolve_config_path(Path("etc/bot.toml"), NO_ENV, tmp_path) == path


@pytest.mark.parametrize("via", ["cli", "env"])
def test_named_file_that_does_not_exist_is_an_error(tmp_path: Path, via: str) -> None:
    write(tmp_path, "")
    missing = tmp_path / "missing.toml"
    cli = missing if via == "cli" else None
    environ = {"WORKBOT_CONFIG": str(missing)} if via == "env" else {}

    with pytest.raises(ConfigError) as caught:
        resolve_config_path(cli, environ, tmp_path)

    assert str(caught.value) == f"{missing}: (file): not found"


# The example file


def test_example_file_loads_clean_and_matches_the_defaults() -> None:
    loaded = load_config(EXAMPLE, NO_ENV)

    assert loaded.config == Config.defaults()


def test_example_file_shows_every_key() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    text = EXAMPLE.read_text(encoding="utf-8")

    def missing(model: type[BaseModel], table: Mapping[str, object], prefix: str) -> list[str]:
        absent: list[str] = []
        for name, field in model.model_fields.items():
            key = field.alias or name
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                child = table.get(key)
                assert isinstance(child, dict), f"{prefix}{key} is not a table"
                absent += missing(annotation, child, f"{prefix}{key}.")
            elif key not in table:
                absent.append(f"{prefix}{key}")
        return absent

    absent = missing(Config, raw, "")

    optional = [spec for spec in PLATFORMS if spec.default is None]
    assert absent == [
        "bot.link_secret_env",
        "database.url_env",
        "audit.key_env",
        *(f"platforms.{spec.name}" for spec in optional),
    ]
    assert '# url_env = "' in text
    assert '# link_secret_env = "' in text
    assert '# key_env = "' in text


def test_each_platform_page_shows_its_table_with_every_key() -> None:
    """A platform's [platforms.<name>] table is documented on its own page (so that adding a
    platform touches its page, not a shared file), with every key of its model."""
    docs = EXAMPLE.parent / "docs" / "platforms"
    for spec in PLATFORMS:
        page = (docs / f"{spec.name}.md").read_text(encoding="utf-8")
        if spec.default is not None and spec.name not in page:
            continue
        assert f"[platforms.{spec.name}]" in page, spec.name
        for name, field in spec.config_model.model_fields.items():
            assert f"{field.alias or name} = " in page, (spec.name, name)


# Broken files: each problem is `file: key.path: reason`

SCHEME_HINT = "use sqlite+aiosqlite:// or postgresql+asyncpg://"
DURATION_HINT = "(use e.g. 30m, 2h, 1d, 1h30m)"
SECRET_NEEDED = "(needed because egov.callback_url is set)"
CALLBACK = '[egov]\ncallback_url = "https://portal.example.gov.cn/workbot/events"\n'

HAS = ", ".join(spec.name for spec in PLATFORMS)  # the platform list, in its order

BROKEN = {
    "unknown key": ("[server]\nprot = 8080\n", NO_ENV, ["server.prot: unknown key"]),
    "wrong type": (
        '[server]\nport = "x"\n',
        NO_ENV,
        ["server.port: expected an integer, got string"],
    ),
    "numeric string is still a string": (
        '[server]\nport = "8080"\n',
        NO_ENV,
        ["server.port: expected an integer, got string"],
    ),
    "port out of range": (
        "[server]\nport = 70000\n",
        NO_ENV,
        ["server.port: must be at most 65535, got 70000"],
    ),
    "bad timezone": (
        '[bot]\ntimezone = "Mars/Base"\n',
        NO_ENV,
        ["bot.timezone: unknown timezone 'Mars/Base'"],
    ),
    "bad language": (
        '[bot]\nlanguage = "fr"\n',
        NO_ENV,
        ["bot.language: expected 'zh-CN' or 'en', got 'fr'"],
    ),
    "public url not http": (
        '[bot]\npublic_url = "ftp://files.example.org"\n',
        NO_ENV,
        ["bot.public_url: expected an http:// or https:// URL with a host"],
    ),
    "bad duration in list": (
        '[schedule]\nremind_before = ["1d", "2x"]\n',
        NO_ENV,
        [f"schedule.remind_before.1: invalid duration '2x' {DURATION_HINT}"],
    ),
    "empty duration": (
        '[server]\nshutdown_timeout = ""\n',
        NO_ENV,
        [f"server.shutdown_timeout: invalid duration '' {DURATION_HINT}"],
    ),
    "zero duration": (
        "[schedule]\nescalate_after = 0\n",
        NO_ENV,
        ["schedule.escalate_after: duration 0 must be positive"],
    ),
    "zero body timeout": (
        '[server]\nbody_timeout = "0s"\n',
        NO_ENV,
        ["server.body_timeout: duration '0s' must be positive"],
    ),
    "no slow bodies at all": (
        "[server]\nslow_bodies_per_client = 0\n",
        NO_ENV,
        ["server.slow_bodies_per_client: must be at least 1, got 0"],
    ),
    "missing needed secret": (
        CALLBACK,
        NO_ENV,
        [f"egov.secret_env: environment variable WORKBOT_EGOV_SECRET is not set {SECRET_NEEDED}"],
    ),
    "empty needed secret": (
        CALLBACK,
        {"WORKBOT_EGOV_SECRET": ""},
        [f"egov.secret_env: environment variable WORKBOT_EGOV_SECRET is empty {SECRET_NEEDED}"],
    ),
    "syntax error": (
        "[server]\nport = \n",
        NO_ENV,
        ["(syntax): Invalid value (at line 2, column 8)"],
    ),
    "duplicate key": (
        '[bot]\nlanguage = "en"\nlanguage = "zh-CN"\n',
        NO_ENV,
        ["(syntax): Cannot overwrite a value (at line 3, column 19)"],
    ),
    "unknown platform": (
        "[platforms.foo]\nenabled = true\n",
        NO_ENV,
        [f"platforms.foo: unknown platform (this version has: {HAS})"],
    ),
    "a platform this version does not have": (
        '[group]\nplatform = "fax"\n',
        NO_ENV,
        [f"group.platform: unknown platform 'fax' (this version has: {HAS})"],
    ),
    "a bound platform without its table": (
        '[group]\nplatform = "wecom"\n',
        NO_ENV,
        ["group.platform: 'wecom' needs a [platforms.wecom] table"],
    ),
    "the unauthenticated local group beside another group platform": (
        '[group]\nplatform = "webhook"\n[platforms.webhook]\nurl = "https://x.example"\n'
        "[platforms.local]\nenabled = true\n",
        {"WORKBOT_WEBHOOK_TOKEN": "t"},
        [
            "platforms.local.enabled: the local group has no authentication and cannot run "
            "beside the group on 'webhook' (anyone reaching the port could act as the office "
            "there): leave it off"
        ],
    ),
    "the local group on a non-loopback address": (
        '[server]\nhost = "0.0.0.0"\n',
        NO_ENV,
        [
            "server.host: the local group has no authentication: serve it on a loopback "
            "address (127.0.0.1, ::1 or localhost), not '0.0.0.0'"
        ],
    ),
    "unknown section": ("[servre]\nport = 1\n", NO_ENV, ["servre: unknown section"]),
    "unsupported database scheme": (
        '[database]\nurl = "mysql://db.example.org/workbot"\n',
        NO_ENV,
        [f"database.url: unsupported database url scheme 'mysql'; {SCHEME_HINT}"],
    ),
    "database driver missing": (
        '[database]\nurl = "postgresql://db.example.org/workbot"\n',
        NO_ENV,
        [f"database.url: unsupported database url scheme 'postgresql'; {SCHEME_HINT}"],
    ),
    "database url env unset": (
        '[database]\nurl_env = "WORKBOT_DATABASE_URL"\n',
        NO_ENV,
        [
            "database.url_env: environment variable WORKBOT_DATABASE_URL is not set "
            "(needed because database.url_env is set)"
        ],
    ),
    "working hours backwards": (
        '[schedule]\nworking_hours = "17:30-08:30"\n',
        NO_ENV,
        ["schedule.working_hours: must start before it ends, got '17:30-08:30'"],
    ),
    "bad digest time": (
        '[schedule]\ndigest_at = "9am"\n',
        NO_ENV,
        ["schedule.digest_at: invalid time '9am' (use HH:MM, e.g. 09:00)"],
    ),
    "date in both lists": (
        "[schedule]\nextra_holidays = [2025-10-08]\nextra_workdays = ['2025-10-08']\n",
        NO_ENV,
        [
            "schedule.extra_workdays: 2025-10-08 also in schedule.extra_holidays; "
            "a date can be only one"
        ],
    ),
    "bad date": (
        "[schedule]\nextra_holidays = ['2025-02-30']\n",
        NO_ENV,
        ["schedule.extra_holidays.0: invalid date '2025-02-30' (use YYYY-MM-DD)"],
    ),
    "skew out of range": (
        "[egov]\nmax_skew_seconds = 0\n",
        NO_ENV,
        ["egov.max_skew_seconds: must be at least 1, got 0"],
    ),
    "logging json not a boolean": (
        '[logging]\njson = "yes"\n',
        NO_ENV,
        ["logging.json: expected true or false, got string"],
    ),
    "section is not a table": (
        "server = 8080\n",
        NO_ENV,
        ["server: expected a table, got integer"],
    ),
}


@pytest.mark.parametrize(("text", "environ", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_file_names_file_key_and_reason(
    tmp_path: Path, text: str, environ: Mapping[str, str], expected: list[str]
) -> None:
    path = write(tmp_path, text)

    assert problems_of(path, environ) == [f"{path}: {line}" for line in expected]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [bot]
        timezone = "Mars/Base"

        [server]
        prot = 8080
        port = "x"

        [database]
        url = "mysql://db.example.org/workbot"

        [egov]
        callback_url = "https://portal.example.gov.cn/workbot/events"

        [schedule]
        remind_before = ["1d", "2x"]

        [platforms.foo]
        """,
    )

    assert sorted(problems_of(path)) == sorted(
        f"{path}: {line}"
        for line in [
            "bot.timezone: unknown timezone 'Mars/Base'",
            "server.port: expected an integer, got string",
            "server.prot: unknown key",
            f"database.url: unsupported database url scheme 'mysql'; {SCHEME_HINT}",
            f"schedule.remind_before.1: invalid duration '2x' {DURATION_HINT}",
            f"platforms.foo: unknown platform (this version has: {HAS})",
            f"egov.secret_env: environment variable WORKBOT_EGOV_SECRET is not set {SECRET_NEEDED}",
        ]
    )


def test_environment_is_not_checked_for_a_section_that_is_itself_broken(tmp_path: Path) -> None:
    path = write(tmp_path, CALLBACK + "max_skew_seconds = -5\n")

    assert problems_of(path) == [f"{path}: egov.max_skew_seconds: must be at least 1, got -5"]


def test_config_error_prints_one_problem_per_line() -> None:
    error = ConfigError([ConfigProblem("a.toml", "server.port", "x"), ConfigProblem("a", "b", "c")])

    assert str(ConfigProblem("a.toml", "server.prot", "unknown key")) == (
        "a.toml: server.prot: unknown key"
    )
    assert str(error) == "a.toml: server.port: x\na: b: c"


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('[group]\nchat_id = "café"\n'.encode("latin-1"))

    assert problems_of(missing) == [f"{missing}: (file): not found"]
    assert problems_of(tmp_path) == [f"{tmp_path}: (file): is a directory, not a file"]
    assert problems_of(binary) == [f"{binary}: (file): not valid UTF-8 (bad byte at offset 22)"]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes('\ufeff[group]\nchat_id = "办公室"\n'.encode())

    assert load_config(path, NO_ENV).config.group.chat_id == "办公室"


# Secrets and environment variables


def test_secret_value_never_appears_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, CALLBACK + 'secret_env = "EGOV_KEY"\n[server]\nport = "x"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, {"EGOV_KEY": SECRET})

    assert SECRET not in str(caught.value)
    assert [p.key for p in caught.value.problems] == ["server.port"]


def test_needed_secret_set_loads_and_is_available(tmp_path: Path) -> None:
    path = write(tmp_path, CALLBACK)

    config = load_config(path, {"WORKBOT_EGOV_SECRET": SECRET}).config

    assert config.egov.secret({"WORKBOT_EGOV_SECRET": SECRET}) == SECRET
    assert SECRET not in repr(config)


@pytest.mark.parametrize("environ", [{}, {"WORKBOT_EGOV_SECRET": ""}])
def test_egov_is_off_without_its_secret(environ: dict[str, str]) -> None:
    config = load_config(None, environ).config

    assert config.egov.secret(environ) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            f"mysql://admin:{SECRET}@db.example.org/workbot",
            f"unsupported database url scheme 'mysql'; {SCHEME_HINT}",
        ),
        (f"admin:{SECRET}@db.example.org", f"not a database url ({SCHEME_HINT})"),
    ],
)
def test_bad_database_url_from_env_is_reported_without_its_value(
    tmp_path: Path, url: str, reason: str
) -> None:
    path = write(tmp_path, '[database]\nurl_env = "WORKBOT_DATABASE_URL"\n')

    problems = problems_of(path, {"WORKBOT_DATABASE_URL": url})

    assert problems == [
        f"{path}: database.url_env: environment variable WORKBOT_DATABASE_URL: {reason}"
    ]
    assert all(SECRET not in problem for problem in problems)


def test_env_var_name_that_looks_like_a_secret_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, f'[egov]\nsecret_env = "{SECRET}"\n')

    problems = problems_of(path)

    assert problems == [
        f"{path}: egov.secret_env: expected an environment variable name (letters, digits and _)"
    ]


def test_database_url_env_overrides_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl_env = "WORKBOT_DATABASE_URL"\n')
    url = f"postgresql+asyncpg://workbot:{SECRET}@db.example.org/workbot"
    environ = {"WORKBOT_DATABASE_URL": url}

    database = load_config(path, environ).config.database

    assert database.resolved_url(environ) == url
    assert DatabaseConfig().resolved_url(environ) == "sqlite+aiosqlite:///workbot.db"


def test_resolved_url_reports_a_variable_that_went_missing() -> None:
    database = DatabaseConfig(url_env="WORKBOT_DATABASE_URL")

    with pytest.raises(ConfigError) as caught:
        database.resolved_url(NO_ENV)

    assert str(caught.value) == (
        "<environment>: database.url_env: environment variable WORKBOT_DATABASE_URL is not set "
        "(needed because database.url_env is set)"
    )


def test_egov_secret_check_is_per_section() -> None:
    egov = EgovConfig(callback_url="https://portal.example.gov.cn/cb")

    assert egov.environment_problems({"WORKBOT_EGOV_SECRET": SECRET}) == []
    assert [key for key, _ in egov.environment_problems(NO_ENV)] == ["secret_env"]


# Values that are parsed


def test_realistic_file_is_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [bot]
        language = "en"
        timezone = "Europe/Berlin"
        public_url = "https://bot.example.org/workbot/"

        [server]
        port = 9000
        shutdown_timeout = 30

        [database]
        url = "postgresql+asyncpg://workbot@db.example.org/workbot"
        auto_migrate = false

        [group]
        platform = "webhook"
        chat_id = "wrOgAAAA"

        [schedule]
        working_hours = "09:00 - 18:00"
        quiet_hours = "21:30-06:45"
        digest_at = 08:45:00
        remind_before = ["1w", "1d", "1h30m", 600]
        extra_holidays = [2025-10-08, "2025-10-09"]
        extra_workdays = ["2025-09-28"]

        [platforms.webhook]
        url = "https://chat.example.org/hooks/workbot"

        [logging]
        level = "DEBUG"
        json = true
        """,
    )

    config = load_config(path, {"WORKBOT_WEBHOOK_TOKEN": "t0ken"}).config

    assert config.bot.tz == ZoneInfo("Europe/Berlin")
    assert config.bot.public_url == "https://bot.example.org/workbot"
    assert config.server.shutdown_timeout == timedelta(seconds=30)
    assert config.database.auto_migrate is False
    assert config.group.platform == "webhook"
    assert config.schedule.working_hours == "09:00-18:00"
    assert config.schedule.digest_at == "08:45"
    assert config.schedule.remind_before == (
        timedelta(weeks=1),
        timedelta(days=1),
        timedelta(hours=1, minutes=30),
        timedelta(minutes=10),
    )
    assert config.schedule.extra_holidays == (date(2025, 10, 8), date(2025, 10, 9))
    assert config.schedule.extra_workdays == (date(2025, 9, 28),)
    assert config.platforms.local.enabled is False  # not beside another platform (no auth)
    assert (config.logging.level, config.logging.json_format) == ("DEBUG", True)


def test_quiet_hours_wrap_past_midnight() -> None:
    schedule = Config.defaults().schedule

    assert schedule.in_quiet_hours(time(23, 0))
    assert schedule.in_quiet_hours(time(6, 59))
    assert not schedule.in_quiet_hours(time(7, 0))
    assert not schedule.in_quiet_hours(time(12, 0))
    assert schedule.in_working_hours(time(8, 30))
    assert not schedule.in_working_hours(time(17, 30))


# Durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (45, timedelta(seconds=45)),
    ],
)
def test_duration_forms(text: str | int, expected: timedelta) -> None:
    assert DURATION.validate_python(text) == expected


@pytest.mark.parametrize("text", ["2x", "", "1m1h", "-1h", " 1h", "1.5h", "1H", "h", "٣h"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DURATION.validate_python(text)

    assert caught.value.errors()[0]["ctx"]["error"].args == (
        f"invalid duration {text!r} (use e.g. 30m, 2h, 1d, 1h30m)",
    )


def test_duration_serializes_to_compact_form() -> None:
    assert DURATION.dump_python(timedelta(seconds=90)) == "1m30s"
    assert DURATION.dump_python(timedelta(days=8)) == "1w1d"
    assert format_duration(timedelta(hours=26)) == "1d2h"


SECONDS = st.integers(min_value=1, max_value=MAX_DURATION // timedelta(seconds=1))


@settings(database=None)
@given(SECONDS)
def test_duration_round_trips_through_its_string_form(seconds: int) -> None:
    value = timedelta(seconds=seconds)

    text = DURATION.dump_python(value)

    assert isinstance(text, str)
    assert DURATION.validate_python(text) == value
    assert parse_duration(format_duration(value)) == value


@settings(database=None)
@given(st.tuples(*(st.none() | st.integers(0, 300) for _ in "wdhms")))
def test_generated_duration_strings_parse_to_their_sum(counts: tuple[int | None, ...]) -> None:
    units = (604_800, 86_400, 3_600, 60, 1)
    text = "".join(f"{n}{u}" for n, u in zip(counts, "wdhms", strict=True) if n is not None)
    total = sum(n * size for n, size in zip(counts, units, strict=True) if n is not None)

    if total > 0:
        assert DURATION.validate_python(text) == timedelta(seconds=total)
    else:
        with pytest.raises(ValidationError):
            DURATION.validate_python(text)


TOML_VALUES = st.one_of(
    st.text(),
    st.text(alphabet="0123456789wdhms"),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.dates(),
    st.times(),
    st.lists(st.integers(), max_size=3),
)


@settings(database=None)
@given(TOML_VALUES)
def test_arbitrary_input_only_ever_fails_validation(value: object) -> None:
    try:
        result = DURATION.validate_python(value)
    except ValidationError:
        return
    assert timedelta(0) < result <= MAX_DURATION


def _field_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys |= _field_keys(field.annotation)
    return keys


KEYS = st.sampled_from(sorted(_field_keys(Config))) | st.text(max_size=6)
TOML_TREES = st.recursive(
    TOML_VALUES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=8,
)
ENVIRONS = st.dictionaries(
    st.sampled_from(["WORKBOT_EGOV_SECRET", "WORKBOT_DATABASE_URL"]), st.text(max_size=12)
)


@settings(database=None)
@given(st.dictionaries(KEYS, st.dictionaries(KEYS, TOML_TREES, max_size=4) | TOML_VALUES), ENVIRONS)
def test_arbitrary_toml_only_ever_raises_config_error(
    raw: dict[str, object], environ: dict[str, str]
) -> None:
    try:
        config = validate_config(raw, "fuzz.toml", environ)
    except ConfigError as error:
        assert error.problems
        assert all(problem.file == "fuzz.toml" for problem in error.problems)
    else:
        assert isinstance(config, Config)


def test_the_platform_list_is_the_one_place_platforms_are_named() -> None:
    """Config tables, group.platform, capabilities and CSV columns all come from one list."""
    from bot.config import PlatformsConfig
    from bot.platforms.registry import PLATFORMS, capabilities_of, directory_columns

    names = [spec.name for spec in PLATFORMS]
    assert list(PlatformsConfig.model_fields) == names
    assert Config.platform_names() == tuple(names)
    assert directory_columns() == tuple(s.directory_column for s in PLATFORMS if s.directory_column)
    for spec in PLATFORMS:
        assert capabilities_of(spec.name) == spec.capabilities
        assert spec.config_model.__module__ == f"bot.platforms.{spec.name}"
    assert capabilities_of("fax") == Capabilities()
