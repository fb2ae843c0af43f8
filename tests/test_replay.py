"""`workbot audit verify` replays the audit trail: a notice or assignment changed outside the
domain operations (SQL typed into the database) is named, by notice and person name."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage import audit, domain
from storage.db import Database
from storage.replay import Replay, ReplayResult
from storage.types import Channel, Requires
from tests.conftest import T0
from tests.support import CLI, main_in_thread, make_notice, seed_people, snapshot, workbot_cli
from tests.test_audit import operations

MIN = dt.timedelta(minutes=1)


async def history(db: Database) -> None:
    """Notice #1 through every operation to its close; #2 open, acknowledged by two."""
    await seed_people(db, T0)
    first = await make_notice(db, T0, requires=Requires.OUTCOME, deadline=T0 + dt.timedelta(days=7))
    for _, _, call in operations(first):
        async with db.transaction() as s:
            await call(s)
    second = await make_notice(db, T0 + MIN, title="第二份")
    for person in ("p001", "p002"):
        async with db.transaction() as s:
            await domain.acknowledge(
                s, second, person, channel=Channel.GROUP, actor=CLI, now=T0 + 2 * MIN
            )


async def replay(db: Database) -> ReplayResult:
    """Replay the trail against the tables, as `workbot audit verify` does."""
    found = Replay()
    async with db.read(snapshot=True) as s:
        await audit.verify(s, each=found.feed)
        return await found.compare(s)


async def sql(db: Database, statement: str, **params: Any) -> None:
    """Change the database behind the domain's back, as someone with a SQL prompt would."""
    async with db.engine.begin() as conn:
        result = await conn.execute(text(statement), params)
        assert result.rowcount == 1


async def test_an_untouched_database_replays_clean(db: Database, tmp_path: Path) -> None:
    await history(db)

    result = await replay(db)

    assert (result.ok, result.findings, result.notices, result.assignments) == (True, [], 2, 10)
    code, out, err = await workbot_cli(db, tmp_path, "audit", "verify")
    assert (code, err.splitlines()[1:]) == (0, [])  # only the warning that it is not keyed
    assert "Audit chain intact: 15 rows verified." in out
    assert "Replay: the 2 notices and 10 assignments are what the audit trail says." in out


def _ts(db: Database, moment: dt.datetime) -> Any:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if db.is_sqlite else moment


EDITS: dict[str, tuple[str, dict[str, Any], str, str]] = {
    # name: (SQL, params, finding code, the line `workbot audit verify` prints)
    "notice state": (
        "UPDATE notice SET state = 'closed', closed_at = :now WHERE id = 2",
        {"now": T0},
        "notice_state",
        "Notice #2: it is closed, but the audit trail leaves it open.",
    ),
    "closed notice reopened": (
        "UPDATE notice SET state = 'open' WHERE id = 1",
        {},
        "notice_state",
        "Notice #1: it is open, but the audit trail leaves it closed.",
    ),
    "notice deadline": (
        "UPDATE notice SET deadline = :now WHERE id = 1",
        {"now": T0 + dt.timedelta(days=30)},
        "notice_field",
        "Notice #1: its deadline differs from what audit row 2 recorded.",
    ),
    "assignment state": (
        "UPDATE assignment SET state = 'done', outstanding = false"
        " WHERE notice_id = 2 AND person_id = 'p003'",
        {},
        "assignment_state",
        "Notice #2, 王五: the assignment is done, but the audit trail (row 13) leaves it pending.",
    ),
    "assignment hidden from the pending list": (
        "UPDATE assignment SET outstanding = false WHERE notice_id = 2 AND person_id = 'p004'",
        {},
        "assignment_outstanding",
        "Notice #2, 赵六: the assignment is marked not outstanding, but its state makes it"
        " outstanding.",
    ),
    "assignment deleted": (
        "DELETE FROM assignment WHERE notice_id = 2 AND person_id = 'p005'",
        {},
        "assignment_missing",
        "Notice #2, 钱七: the assignment made by audit row 13 is not in the database.",
    ),
    "notice inserted": (
        "INSERT INTO notice (id, kind, title, body, source, audience, requires, state,"
        " created_by, created_at) VALUES (3, 'notice', '伪造', '', 'cli', '{}', 'ack', 'open',"
        " 'cli', :now)",
        {"now": T0},
        "notice_unexplained",
        "Notice #3: no audit event created it.",
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
async def test_a_direct_sql_edit_is_named_and_fails_verify(
    db: Database, tmp_path: Path, edit: str
) -> None:
    await history(db)
    statement, params, code, line = EDITS[edit]
    params = {k: _ts(db, v) if isinstance(v, dt.datetime) else v for k, v in params.items()}
    await sql(db, statement, **params)
    before = await snapshot(db)

    result = await replay(db)

    assert [f.code for f in result.findings] == [code]
    exit_code, out, err = await workbot_cli(db, tmp_path, "audit", "verify")
    assert exit_code == 1
    assert "Audit chain intact: 15 rows verified." in out  # the trail itself is untouched
    assert err.splitlines()[1] == line  # after the warning that the chain is not keyed
    assert "Replay: 1 rows differ from what the audit trail says." in err
    assert "p00" not in err  # people are named, never by directory id
    assert await snapshot(db) == before  # verify changes nothing


async def test_an_assignment_no_event_created_is_named(db: Database, tmp_path: Path) -> None:
    await history(db)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO person (id, name, department, roles, auto_registered, created_at,"
                " updated_at) VALUES ('p009', '孙九', '督导科', '[\"staff\"]', false, :t, :t)"
            ),
            {"t": _ts(db, T0)},
        )
        await conn.execute(
            text(
                "INSERT INTO assignment (notice_id, person_id, state, outstanding, late,"
                " updated_at) VALUES (2, 'p009', 'verified', false, false, :t)"
            ),
            {"t": _ts(db, T0)},
        )

    result = await replay(db)

    assert [(f.code, f.notice_id, f.name) for f in result.findings] == [
        ("assignment_unexplained", 2, "孙九")
    ]
    code, _, err = await workbot_cli(db, tmp_path, "audit", "verify")
    assert code == 1
    assert "Notice #2, 孙九: no audit event created this assignment." in err


async def test_findings_are_in_the_configured_language_one_per_line(
    db: Database, tmp_path: Path
) -> None:
    await history(db)
    await sql(db, "UPDATE notice SET state = 'cancelled' WHERE id = 2")
    url = db.url.render_as_string(hide_password=False)
    config = tmp_path / "zh.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")

    code, out, err = await main_in_thread(["-c", str(config), "audit", "verify"], {})

    assert code == 1
    assert out.splitlines()[0] == "审计链完整：共校验 15 条记录。"
    assert err.splitlines() == [
        "警告：未设置 [audit] key_env，审计链不带密钥：只能发现意外损坏，"
        "发现不了有数据库写权限的人对记录的改写。",
        "通知 #2：当前为「已撤回」，按审计记录应为「进行中」。",
        "重放核对：有 1 处与审计记录不符。",
    ]
