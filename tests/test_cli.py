"""The `workbot` CLI as the office uses it: what it prints, what it stores, what it refuses."""

from __future__ import annotations

import io
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli import main
from bot.core import portal_signing as signing

PEOPLE = """id,name,department,roles,phone,wecom
p001,张三,基础教育科,staff,13800000001,zhangsan
p002,李四,基础教育科,staff;head,,lisi
p003,王五,办公室,office,,
p004,赵六,督导科,staff,,
"""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with a config pointing at its own SQLite file (English output)."""
    (tmp_path / "config.toml").write_text(
        '[bot]\nlanguage = "en"\n[database]\nurl = "sqlite+aiosqlite:///'
        + str(tmp_path / "wb.db")
        + '"\n',
        encoding="utf-8",
    )
    (tmp_path / "people.csv").write_text(PEOPLE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI in-process with the work dir's config; returns (exit code, stdout, stderr)."""

    def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["-c", str(workdir / "config.toml"), *argv], env or {})
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def one_notice(run: Run, workdir: Path) -> None:
    """Migrate, import the work dir's people and create one notice for everyone."""
    assert run("migrate")[0] == 0
    assert run("people", "import", str(workdir / "people.csv"))[0] == 0
    assert run("notice", "create", "--title", "T")[0] == 0


def count(db: Path, table: str) -> int:
    """Rows in a table of the SQLite file."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_check_config_ok_and_broken(run: Run, workdir: Path) -> None:
    code, out, _ = run("check-config")
    assert code == 0
    assert "valid" in out
    bad = workdir / "bad.toml"
    bad.write_text('[server]\nprot = 1\nport = "x"\n[bot]\ntimezone = "Mars/Base"\n')
    code, out, err = run("check-config", "-c", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert any(line.startswith(f"{bad}: server.prot: ") for line in lines)
    assert any(line.startswith(f"{bad}: server.port: ") for line in lines)
    assert any(line.startswith(f"{bad}: bot.timezone: ") for line in lines)
    assert "Traceback" not in err


def test_people_import_reports_bad_rows_and_upserts_good_ones(run: Run, workdir: Path) -> None:
    assert run("migrate")[0] == 0
    csv = workdir / "mixed.csv"
    csv.write_text(
        PEOPLE + "p005,钱七,督导科,chief,,\np001,重复,督导科,staff,,\n,无号,督导科,staff,,\n",
        encoding="utf-8",
    )
    code, out, err = run("people", "import", str(csv))
    assert code == 1
    assert f"{csv}: line 6: unknown role(s) 'chief'" in err
    assert f"{csv}: line 7: duplicate id 'p001'" in err
    assert f"{csv}: line 8: missing id" in err
    assert "4 created" in out and "3 rejected" in out
    code, out, _ = run("people", "list")
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["p003", "p001", "p002", "p004"]
    assert "wecom=zhangsan" in out
    # Re-import is an upsert: same rows unchanged, a changed name updated.
    (workdir / "again.csv").write_text(PEOPLE.replace("赵六", "赵六六"), encoding="utf-8")
    code, out, _ = run("people", "import", str(workdir / "again.csv"))
    assert code == 0
    assert "0 created, 1 updated, 3 unchanged, 0 rejected" in out


def test_people_import_file_errors_write_nothing(run: Run, workdir: Path) -> None:
    assert run("migrate")[0] == 0
    bad = workdir / "bad.csv"
    bad.write_text("id,name,roles\np001,张三,staff\n", encoding="utf-8")
    code, _, err = run("people", "import", str(bad))
    assert code == 2
    assert f"{bad}: missing column(s): department" in err
    code, _, err = run("people", "import", str(workdir / "nope.csv"))
    assert code == 2
    assert "nope.csv: cannot read" in err
    code, out, _ = run("people", "import", "--dry-run", str(workdir / "people.csv"))
    assert code == 0
    assert "4 valid rows" in out
    assert count(workdir / "wb.db", "person") == 0


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("p005,\u202e七钱,督导科,staff,,", "line 6, column name: U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("p005,钱七,督\u200b导科,staff,,", "line 6, column department: U+200B (ZERO WIDTH SPACE)"),
        ("p005\u2066,钱七,督导科,staff,,", "line 6, column id: U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ],
    ids=["name", "department", "id"],
)
def test_people_import_refuses_a_file_with_hidden_characters_and_writes_nothing(
    run: Run, workdir: Path, row: str, where: str
) -> None:
    """Attack: a directory row whose name, department or id hides a bidi control or a
    zero-width character (to pass for someone else in lists). The whole file is refused, exit
    2, naming the file, line and column; not even its valid rows are imported."""
    assert run("migrate")[0] == 0
    csv = workdir / "hidden.csv"
    csv.write_text(PEOPLE + row + "\n", encoding="utf-8")
    code, out, err = run("people", "import", str(csv))
    assert code == 2
    assert f"{csv}: {where} hides or reorders text" in err
    assert "nothing was imported" in err
    assert "Traceback" not in err and out == ""
    assert count(workdir / "wb.db", "person") == 0
    assert count(workdir / "wb.db", "audit_event") == 0


def test_people_import_names_the_hidden_character_in_chinese_by_default(
    run: Run, workdir: Path
) -> None:
    assert run("migrate")[0] == 0
    (workdir / "zh.toml").write_text(
        '[database]\nurl = "sqlite+aiosqlite:///' + str(workdir / "wb.db") + '"\n',
        encoding="utf-8",
    )
    csv = workdir / "hidden.csv"
    csv.write_text(PEOPLE + "p005,钱\u200f七,督导科,staff,,\n", encoding="utf-8")
    code, _, err = run("people", "import", "-c", str(workdir / "zh.toml"), str(csv))
    assert code == 2
    assert err.strip() == (
        f"workbot: {csv}: 第 6 行“name”列含有隐藏或改变文字方向的字符 "
        "U+200F（RIGHT-TO-LEFT MARK），请删除后重新导入（本次未导入任何数据）"
    )
    assert count(workdir / "wb.db", "person") == 0


def test_notice_lifecycle_from_the_cli(run: Run, workdir: Path) -> None:
    assert run("migrate")[0] == 0
    assert run("people", "import", str(workdir / "people.csv"))[0] == 0
    code, out, err = run(
        "notice", "create", "--title", "关于报送作业管理自查情况的通知", "--body", "请报送。",
        "--deadline", "2030-12-10", "--to", "dept:基础教育科", "person:p003",
        "--requires", "outcome", "--doc-number", "宜教办发[2019]41号",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "1"  # the id alone on stdout, for scripts
    assert err.splitlines() == [
        "Created notice #1 《关于报送作业管理自查情况的通知》 for 3 people.",
        "The notice is queued for the group: a running workbot serve posts it at once.",
    ]
    code, out, _ = run("notice", "create", "--title", "全体通知", "--to", "all")
    assert (code, out.strip()) == (0, "2")

    code, out, _ = run("notice", "show", "1")
    assert code == 0
    lines = out.splitlines()
    assert "requires: outcome" in lines[0]
    assert "2030-12-10 17:30" in lines[1] and "宜教办发[2019]41号" in lines[1]
    assignees = [line.split("\t") for line in lines[3:]]
    assert sorted(a[0] for a in assignees) == ["p001", "p002", "p003"]
    assert all(a[3] == "pending" for a in assignees)

    code, out, _ = run("notice", "list", "--open")
    assert code == 0
    assert out.splitlines()[0].startswith("#2")
    assert "acknowledged 0/3" in out.splitlines()[1]

    code, out, _ = run("pending", "--person", "p004")
    assert code == 0
    assert out.startswith("#2  全体通知")
    code, out, _ = run("pending")
    assert "#1 《关于报送作业管理自查情况的通知》" in out
    assert "3 still to answer" in out and "4 still to answer" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "dept:不存在科"], "No such department in the directory: 不存在科."),
        (["--to", "person:p999"], "Not in the directory: p999."),
        (["--to", "somebody"], "--to: 'somebody' is not all, dept:NAME or person:ID"),
        (["--deadline", "next week"], "--deadline: 'next week' is not an ISO 8601 date"),
        (["--deadline", "2001-01-01T00:00+08:00"], "deadline is invalid: is already past"),
    ],
)
def test_notice_create_refusals_change_nothing(
    run: Run, workdir: Path, args: list[str], message: str
) -> None:
    assert run("migrate")[0] == 0
    assert run("people", "import", str(workdir / "people.csv"))[0] == 0
    audit_rows = count(workdir / "wb.db", "audit_event")
    code, out, err = run("notice", "create", "--title", "T", *args)
    assert code == 2
    assert message in err
    assert out == ""
    assert count(workdir / "wb.db", "notice") == 0
    assert count(workdir / "wb.db", "audit_event") == audit_rows


def test_notice_create_on_empty_directory_is_audience_empty(run: Run) -> None:
    assert run("migrate")[0] == 0
    code, _, err = run("notice", "create", "--title", "T", "--to", "all")
    assert code == 2
    assert "The audience is empty" in err


def test_unknown_notice_and_bad_id(run: Run) -> None:
    assert run("migrate")[0] == 0
    code, _, err = run("notice", "show", "#99")
    assert code == 2 and "There is no notice #99." in err
    with pytest.raises(SystemExit) as exc:
        run("notice", "show", "abc")
    assert exc.value.code == 2


def test_commands_refuse_an_unmigrated_database(run: Run) -> None:
    code, _, err = run("people", "list")
    assert code == 2
    assert "run `workbot migrate`" in err


def test_audit_verify_detects_an_altered_row(run: Run, workdir: Path) -> None:
    one_notice(run, workdir)
    code, out, _ = run("audit", "verify")
    assert code == 0 and "2 rows verified" in out
    with sqlite3.connect(workdir / "wb.db") as conn:
        conn.execute("UPDATE audit_event SET actor = 'mallory' WHERE seq = 2")
    code, _, err = run("audit", "verify")
    assert code == 1
    assert "row 2" in err and "altered" in err


def test_backup_is_a_consistent_copy(run: Run, workdir: Path) -> None:
    one_notice(run, workdir)
    target = workdir / "backup.db"
    code, out, _ = run("backup", str(target))
    assert code == 0 and "backup.db" in out
    assert count(target, "notice") == 1
    assert count(target, "assignment") == 4
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    code, _, err = run("backup", str(target))
    assert code == 2 and "already exists" in err


def test_backup_on_postgresql_explains_pg_dump(run: Run, workdir: Path) -> None:
    cfg = workdir / "pg.toml"
    cfg.write_text(
        '[bot]\nlanguage = "en"\n[database]\nurl = "postgresql+asyncpg://u:secret@db.example/wb"\n'
    )
    code, out, _ = run("backup", "-c", str(cfg), str(workdir / "x.dump"))
    assert code == 2
    assert "pg_dump --format=custom" in out
    assert "secret" not in out


def test_database_newer_than_the_code_is_refused(run: Run, workdir: Path) -> None:
    assert run("migrate")[0] == 0
    with sqlite3.connect(workdir / "wb.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'fffffffffff0'")
    for argv in (["migrate"], ["people", "list"]):
        code, _, err = run(*argv)
        assert code == 2
        assert "newer workbot" in err
        assert "Traceback" not in err


def test_database_that_cannot_be_opened_is_one_line(run: Run, workdir: Path) -> None:
    cfg = workdir / "nodir.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{workdir}/no/such/dir/x.db"\n')
    code, _, err = run("migrate", "-c", str(cfg))
    assert code == 1
    assert err.startswith("workbot: database sqlite+aiosqlite:///")
    assert "Traceback" not in err


def test_chinese_is_the_default_language(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workdir / "zh.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{workdir}/zh.db"\n')
    assert main(["-c", str(cfg), "migrate"], {}) == 0
    assert main(["-c", str(cfg), "notice", "show", "5"], {}) == 2
    assert "没有编号为 #5 的通知。" in capsys.readouterr().err


def test_the_example_directory_imports_cleanly(run: Run) -> None:
    assert run("migrate")[0] == 0
    example = Path(__file__).resolve().parent.parent / "examples" / "people.csv"
    code, out, err = run("people", "import", str(example))
    assert (code, err) == (0, "")
    assert "8 created" in out


def test_outbox_list_and_retry_a_dead_letter(run: Run, workdir: Path) -> None:
    one_notice(run, workdir)
    code, out, _ = run("outbox", "list")
    assert code == 0
    assert out.splitlines()[0] == "pending 1, sent 0, dead 0"
    assert "\tnotice\tlocal:chat:main\t0\t" in out
    with sqlite3.connect(workdir / "wb.db") as conn:
        conn.execute("UPDATE outbox_message SET state = 'dead', last_error = 'HTTP 400: bad chat'")
    code, out, _ = run("outbox", "list", "--dead")
    assert out.splitlines()[0] == "pending 0, sent 0, dead 1"
    assert out.splitlines()[1].startswith("1\tdead\tnotice")
    assert out.splitlines()[1].endswith("HTTP 400: bad chat")
    code, out, _ = run("outbox", "retry", "1")
    assert code == 0 and "#1" in out
    code, out, _ = run("outbox", "list", "--dead")
    assert out.splitlines() == ["pending 1, sent 0, dead 0"]
    code, _, err = run("outbox", "retry", "1")
    assert code == 2 and "is pending, not dead" in err
    code, _, err = run("outbox", "retry", "99")
    assert code == 2 and "no outbox message 99" in err


EGOV_EXAMPLE_SECRET = "example-secret-do-not-use"  # the worked example of docs/egov-api.md
EGOV_EXAMPLE_BODY = (
    '{"external_id":"portal-2019-1234","doc_number":"宜教办发[2019]41号","kind":"task",'
    '"title":"关于报送作业管理自查情况的通知","issuer":{"department":"办公室","name":"王五"},'
    '"requires":"progress","audience":{"departments":["基础教育科"],"people":["p004"]}}'
)


def test_egov_sign_prints_the_documented_headers(run: Run, workdir: Path) -> None:
    body = workdir / "body.json"
    body.write_text(EGOV_EXAMPLE_BODY, encoding="utf-8")
    env = {"WORKBOT_EGOV_SECRET": EGOV_EXAMPLE_SECRET}
    code, out, err = run(
        "egov", "sign", "--method", "POST", "--path", "/egov/v1/notices",
        "--body-file", str(body), "--timestamp", "1575250800", env=env,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == (
        "X-Workbot-Timestamp: 1575250800\n"
        "X-Workbot-Signature: "
        "sha256=0e695dedc32e4b6359dc407ac7e9638895caff357936a241a645f52239b2ba11\n"
    )
    # A GET has an empty body: no --body-file; the method may be written in lower case.
    code, out, _ = run(
        "egov", "sign", "--method", "get", "--path", "/egov/v1/notices/12",
        "--timestamp", "1575251100", env=env,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[1] == (
        "X-Workbot-Signature: "
        "sha256=c3a8766adb156ea9fa91a1be5fc4bcd0efbeaf6f650c1499e44a94cf819cd0f3"
    )
    assert EGOV_EXAMPLE_SECRET not in out


def test_egov_sign_signs_now_with_the_configured_variable(
    run: Run, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = workdir / "portal.toml"
    cfg.write_text('[bot]\nlanguage = "en"\n[egov]\nsecret_env = "PORTAL_SECRET"\n')
    body = b'{"external_id": "x"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    before = int(time.time())
    code, out, err = run(
        "egov", "sign", "-c", str(cfg), "--body-file", "-", env={"PORTAL_SECRET": "s3cret"}
    )
    assert (code, err) == (0, "")
    headers = dict(line.split(": ", 1) for line in out.splitlines())
    assert list(headers) == ["X-Workbot-Timestamp", "X-Workbot-Signature"]
    assert before <= int(headers["X-Workbot-Timestamp"]) <= int(time.time())
    signing.verify(  # --method and --path default to POST /egov/v1/notices
        "s3cret",
        timestamp=headers["X-Workbot-Timestamp"],
        signature=headers["X-Workbot-Signature"],
        method="POST",
        path_with_query="/egov/v1/notices",
        body=body,
        now=time.time(),
        max_skew=5,
    )
    # --secret-env names another variable than the config's.
    code, out, _ = run(
        "egov", "sign", "-c", str(cfg), "--secret-env", "OTHER", "--timestamp", "1",
        "--path", "/egov/v1/notices/1?x=1", env={"OTHER": "other"},
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[1] == "X-Workbot-Signature: " + signing.sign(
        "other", "1", "POST", "/egov/v1/notices/1?x=1", b""
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "environment variable WORKBOT_EGOV_SECRET is not set or empty"),
        ([], {"WORKBOT_EGOV_SECRET": ""}, "environment variable WORKBOT_EGOV_SECRET is not set"),
        (["--secret-env", "PORTAL_SECRET"], {"WORKBOT_EGOV_SECRET": "x"}, "PORTAL_SECRET is not"),
        (["--body-file", "{dir}/missing.json"], {}, "{dir}/missing.json: cannot read"),
        (["--body-file", "{dir}"], {}, "{dir}: cannot read the request body: Is a directory"),
    ],
)
def test_egov_sign_refusals_name_the_variable_or_file(
    run: Run, workdir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    if "--body-file" in args:
        env = {"WORKBOT_EGOV_SECRET": "x"}
    argv = [a.replace("{dir}", str(workdir)) for a in args]
    code, out, err = run("egov", "sign", "--timestamp", "1", *argv, env=env)
    assert code == 2
    assert out == ""
    assert message.replace("{dir}", str(workdir)) in err
    assert err.startswith("workbot: ") and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--timestamp", "soon"],
        ["--timestamp", "-5"],
        ["--timestamp", "1575250800000"],
        ["--path", "egov/v1/notices"],
        ["--path", "http://example.org/egov/v1/notices"],
        ["--method", "PO ST"],
    ],
)
def test_egov_sign_bad_arguments_exit_2(run: Run, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run("egov", "sign", *args, env={"WORKBOT_EGOV_SECRET": "x"})
    assert exc.value.code == 2


def test_egov_sign_speaks_chinese_by_default(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = workdir / "zh.toml"
    cfg.write_text("")
    assert main(["-c", str(cfg), "egov", "sign"], {}) == 2
    assert "环境变量 WORKBOT_EGOV_SECRET 未设置或为空" in capsys.readouterr().err


AUDIT_KEY = "an-audit-key-of-at-least-32-characters"
KEYED = {"WORKBOT_AUDIT_KEY": AUDIT_KEY}


def keyed_config(workdir: Path) -> str:
    """The work dir's config with `[audit] key_env = "WORKBOT_AUDIT_KEY"` added."""
    path = workdir / "keyed.toml"
    text = (workdir / "config.toml").read_text(encoding="utf-8")
    path.write_text(text + '[audit]\nkey_env = "WORKBOT_AUDIT_KEY"\n', encoding="utf-8")
    return str(path)


def test_check_config_says_whether_the_audit_chain_is_keyed(run: Run, workdir: Path) -> None:
    code, out, err = run("check-config")
    assert code == 0
    assert "Warning: [audit] key_env is not set" in err
    assert "detects accidents" in err

    keyed = keyed_config(workdir)
    code, out, err = run("check-config", "-c", keyed, env=KEYED)
    assert (code, err) == (0, "")
    assert "keyed with HMAC-SHA256; the key is in environment variable WORKBOT_AUDIT_KEY" in out

    for env, reason in (
        ({}, "environment variable WORKBOT_AUDIT_KEY is not set (needed because audit.key_env"),
        ({"WORKBOT_AUDIT_KEY": ""}, "environment variable WORKBOT_AUDIT_KEY is empty"),
        (
            {"WORKBOT_AUDIT_KEY": "short"},
            "environment variable WORKBOT_AUDIT_KEY holds 5 characters",
        ),
    ):
        code, out, err = run("check-config", "-c", keyed, env=env)
        assert code == 2
        assert f"{keyed}: audit.key_env: {reason}" in err
        assert "Traceback" not in err


def test_a_keyed_chain_is_refused_without_its_key(run: Run, workdir: Path) -> None:
    keyed = keyed_config(workdir)
    assert run("-c", keyed, "migrate", env=KEYED)[0] == 0
    assert run("-c", keyed, "people", "import", str(workdir / "people.csv"), env=KEYED)[0] == 0
    rows = count(workdir / "wb.db", "audit_event")

    code, _, err = run("notice", "create", "--title", "T")
    assert code == 2
    assert "The audit chain is keyed (key id " in err
    assert "[audit] key_env is not set" in err
    code, _, err = run("serve")
    assert code == 2
    assert "The audit chain is keyed (key id " in err
    assert "Traceback" not in err
    assert count(workdir / "wb.db", "notice") == 0
    assert count(workdir / "wb.db", "audit_event") == rows

    code, out, err = run("-c", keyed, "audit", "verify", env=KEYED)
    assert (code, err) == (0, "")
    assert f"{rows} of them are keyed (HMAC-SHA256)" in out
    code, out, err = run("audit", "verify")
    assert code == 2
    assert f"Rows 1 to {rows} are keyed (HMAC-SHA256) and could not be verified" in err


def test_audit_verify_says_each_thing_in_one_language(run: Run, workdir: Path) -> None:
    one_notice(run, workdir)
    with sqlite3.connect(workdir / "wb.db") as conn:
        conn.execute("UPDATE audit_event SET actor = 'mallory' WHERE seq = 2")
    zh = workdir / "zh.toml"
    zh.write_text(
        (workdir / "config.toml").read_text(encoding="utf-8").replace('language = "en"', ""),
        encoding="utf-8",
    )

    code, out, err = run("-c", str(zh), "audit", "verify")

    assert code == 1
    assert err.splitlines()[0] == "审计链被篡改：第 2 条记录被改动过。"
    assert "row" not in err and "altered" not in err
    assert out == "重放核对：1 个通知、4 项分派与审计记录一致。\n"


def test_notice_create_says_when_the_group_sees_it_in_chinese_by_default(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = workdir / "zh.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{workdir}/zh.db"\n')
    assert main(["-c", str(cfg), "migrate"], {}) == 0
    assert main(["-c", str(cfg), "people", "import", str(workdir / "people.csv")], {}) == 0
    capsys.readouterr()
    assert main(["-c", str(cfg), "notice", "create", "--title", "周报"], {}) == 0
    out, err = capsys.readouterr()
    assert out == "1\n"
    assert err.splitlines() == [
        "已创建通知 #1《周报》，对象 4 人。",
        "通知已排队发往工作群：正在运行的 workbot serve 会立即发出。",
    ]
