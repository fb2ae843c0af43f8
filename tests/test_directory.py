"""The people directory: parsing the CSV (with every rejection reason) and upserting it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from storage.db import Database
from storage.directory import (
    DirectoryFileError,
    ImportResult,
    ParsedDirectory,
    parse_people_csv,
    register_sender,
    upsert_people,
)
from storage.domain import Actor
from storage.errors import NotAllowed
from storage.models import AuditEvent, Person
from storage.queries import PersonView, list_people
from storage.readable import clean
from storage.types import Role
from tests.conftest import T0
from tests.support import CLI, PEOPLE_CSV, audit_length, snapshot

from support import CSV_PLATFORMS

LATER = T0 + dt.timedelta(days=1)


async def import_csv(
    db: Database, data: bytes, now: dt.datetime = T0, actor: Actor = CLI
) -> ImportResult:
    """Parse and upsert a directory file in one unit of work."""
    async with db.transaction() as s:
        return await upsert_people(s, parse_people_csv(data, CSV_PLATFORMS), actor=actor, now=now)


async def import_wecom_rows(db: Database, *rows: str) -> ImportResult:
    """Import, a day later, a file of `rows` with the columns id,name,department,roles,wecom."""
    data = "".join(f"{line}\n" for line in ("id,name,department,roles,wecom", *rows))
    return await import_csv(db, data.encode(), now=LATER)


async def people(db: Database) -> dict[str, PersonView]:
    """The stored directory by person id."""
    async with db.read() as s:
        return {p.id: p for p in await list_people(s)}


# --- parsing -------------------------------------------------------------------------------


def test_good_rows_are_parsed() -> None:
    parsed = parse_people_csv(PEOPLE_CSV, CSV_PLATFORMS)

    assert parsed.encoding == "utf-8"
    assert parsed.rejected == []
    assert [(r.line, r.id, r.name, r.department, r.roles) for r in parsed.rows] == [
        (2, "p001", "张三", "基础教育科", ("staff",)),
        (3, "p002", "李四", "基础教育科", ("staff", "head")),
        (4, "p003", "王五", "办公室", ("office",)),
        (5, "p004", "赵六", "督导科", ("staff",)),
        (6, "p005", "钱七", "督导科", ("head",)),
    ]
    assert (parsed.rows[0].phone, parsed.rows[0].platform_ids) == (
        "13800000001",
        {"wecom": "zhangsan"},
    )
    assert (parsed.rows[2].phone, parsed.rows[2].platform_ids) == (None, {})


def test_cells_are_trimmed_and_roles_normalised() -> None:
    data = (
        " ID , Name ,Department,ROLES,Phone,telegram,matrix\r\n"
        " p1 , 孙八 , 教研室 , Staff；HEAD ; staff , +86 138-0000-0000 ,42,@sun:example.org\r\n"
        "p2,周九,,,,,\r\n"
        "\r\n"
        ",,,,,,\r\n"
    ).encode()

    parsed = parse_people_csv(data, CSV_PLATFORMS)

    assert parsed.rejected == []
    first, second = parsed.rows
    assert (first.id, first.name, first.department, first.roles, first.phone) == (
        "p1",
        "孙八",
        "教研室",
        ("staff", "head"),
        "+86 138-0000-0000",
    )
    assert first.platform_ids == {"telegram": "42", "matrix": "@sun:example.org"}
    # No roles means staff; an empty department is allowed.
    assert (second.line, second.department, second.roles, second.phone) == (3, "", ("staff",), None)


def test_a_utf8_bom_is_accepted() -> None:
    parsed = parse_people_csv(b"\xef\xbb\xbf" + PEOPLE_CSV, CSV_PLATFORMS)

    assert parsed.encoding == "utf-8"
    assert parsed.rejected == []
    assert [r.id for r in parsed.rows] == ["p001", "p002", "p003", "p004", "p005"]


def test_gb18030_as_spreadsheets_export_it() -> None:
    parsed = parse_people_csv(PEOPLE_CSV.decode().encode("gb18030"), CSV_PLATFORMS)

    assert parsed.encoding == "gb18030"
    assert parsed.rejected == []
    assert [(r.name, r.department) for r in parsed.rows][:2] == [
        ("张三", "基础教育科"),
        ("李四", "基础教育科"),
    ]


BAD_ROWS = """id,name,department,roles,phone,wecom,dingtalk
p001,张三,基础教育科,staff,,zhangsan,
p002,李四,基础教育科,boss,,,
p001,张三丰,基础教育科,staff,,,
p003,,办公室,office,,,

,王五,办公室,office,,,
p004,赵六,督导科,staff,,zhangsan,
p005,钱七,督导科,head;chief;staff,,,
p006,孙八,督导科,staff,call me,,
bad id!,周九,督导科,staff,,,
p007,吴十,督导科,staff,,,,
p008,郑一,督导科,staff,,,zhangsan
p009,,督导科,wizard,,,
"""


def test_each_rejected_row_has_its_line_and_reason() -> None:
    parsed = parse_people_csv(BAD_ROWS.encode(), CSV_PLATFORMS)

    assert [r.id for r in parsed.rows] == ["p001", "p008"]
    reasons = {r.line: r.reason for r in parsed.rejected}
    assert sorted(reasons) == [3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
    assert "unknown role(s) 'boss'" in reasons[3]
    assert "duplicate id 'p001' (first on line 2)" in reasons[4]
    assert reasons[5] == "missing name"
    assert reasons[7] == "missing id"
    assert "wecom id 'zhangsan' already given to p001 on line 2" in reasons[8]
    assert "'chief'" in reasons[9]
    assert "'head'" not in reasons[9]
    assert "invalid phone" in reasons[10]
    assert "invalid id 'bad id!'" in reasons[11]
    assert "8 fields, the header has 7" in reasons[12]
    # Several problems on one row are all reported.
    assert "missing name" in reasons[14]
    assert "unknown role(s) 'wizard'" in reasons[14]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"id,name,roles\np1,x,staff\n", "missing column(s): department"),
        (b"name,department\n", "missing column(s): id, roles"),
        (b"id,name,department,roles,email\n", "unknown column(s): email"),
        (b"id,name,department,roles,wechat,phone\n", "unknown column(s): wechat"),
        (b"id,name,department,roles,phone,Phone\n", "duplicate column(s): phone"),
        (b"id,name,department,roles\n\xff\xfe\xfa\n", "not UTF-8 or GB18030"),
    ],
)
def test_whole_file_errors(data: bytes, message: str) -> None:
    with pytest.raises(DirectoryFileError) as info:
        parse_people_csv(data, CSV_PLATFORMS)
    assert message in str(info.value)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_directory_file_error(data: bytes) -> None:
    try:
        parsed = parse_people_csv(data, CSV_PLATFORMS)
    except DirectoryFileError:
        return
    assert isinstance(parsed, ParsedDirectory)


_HEADERS = st.sampled_from(
    [
        "id,name,department,roles",
        "id,name,department,roles,phone,wecom,local",
        "\ufeffid,name,department,roles,telegram",
    ]
)
_CELL = st.text(alphabet=st.sampled_from('ab1;；,"\r\n \t\x00张-_.+@'), max_size=12)


@settings(max_examples=300, deadline=None, database=None)
@given(
    header=_HEADERS,
    body=st.lists(st.lists(_CELL, max_size=9).map(",".join), max_size=8).map("\n".join),
    encoding=st.sampled_from(["utf-8", "gb18030"]),
)
def test_arbitrary_rows_are_accepted_or_rejected_never_crash(
    header: str, body: str, encoding: str
) -> None:
    try:
        parsed = parse_people_csv((header + "\n" + body).encode(encoding), CSV_PLATFORMS)
    except DirectoryFileError:
        return
    ids = [r.id for r in parsed.rows]
    assert len(ids) == len(set(ids))
    assert all(r.roles and set(r.roles) <= {x.value for x in Role} for r in parsed.rows)
    lines = [r.line for r in parsed.rows] + [r.line for r in parsed.rejected]
    assert len(lines) == len(set(lines))


# --- upserting -----------------------------------------------------------------------------


async def test_import_creates_then_reimport_is_unchanged(db: Database) -> None:
    first = await import_csv(db, PEOPLE_CSV)
    assert (first.created, first.updated, first.unchanged, first.rejected) == (5, 0, 0, [])
    stored = await people(db)
    assert set(stored) == {"p001", "p002", "p003", "p004", "p005"}
    p1 = stored["p001"]
    assert (p1.name, p1.department, p1.roles, p1.phone, p1.platform_ids) == (
        "张三",
        "基础教育科",
        ["staff"],
        "13800000001",
        {"wecom": "zhangsan"},
    )
    before = await snapshot(db)

    again = await import_csv(db, PEOPLE_CSV, now=LATER)

    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 5, [])
    assert await snapshot(db) == before  # not even an audit row


async def test_reimport_updates_changed_rows(db: Database) -> None:
    await import_csv(db, PEOPLE_CSV)
    audit_before = await audit_length(db)
    changed = (
        PEOPLE_CSV.decode()
        .replace(
            "p001,张三,基础教育科,staff,13800000001,zhangsan", "p001,张三,督导科,staff;head,,zs"
        )
        .replace("p004,赵六,督导科,staff,,", "p004,赵六,督导科,staff,,zhaoliu")
        + "p006,孙八,教研室,staff,,\n"
    ).encode()

    result = await import_csv(db, changed, now=LATER)

    assert (result.created, result.updated, result.unchanged, result.rejected) == (1, 2, 3, [])
    stored = await people(db)
    p1 = stored["p001"]
    assert (p1.department, p1.roles, p1.phone, p1.platform_ids) == (
        "督导科",
        ["staff", "head"],
        None,
        {"wecom": "zs"},
    )
    assert stored["p004"].platform_ids == {"wecom": "zhaoliu"}
    assert stored["p006"].name == "孙八"
    async with db.read() as s:
        person = await s.get(Person, "p001")
        assert person is not None
        assert (person.created_at, person.updated_at) == (T0, LATER)
        untouched = await s.get(Person, "p003")
        assert untouched is not None
        assert untouched.updated_at == T0
    assert await audit_length(db) == audit_before + 1


async def test_a_platform_id_owned_by_someone_else_rejects_that_row(db: Database) -> None:
    await import_csv(db, PEOPLE_CSV)
    before = await people(db)

    result = await import_wecom_rows(
        db, "p010,冒名,办公室,staff,zhangsan", "p011,新人,办公室,staff,newcomer"
    )

    assert (result.created, result.updated, result.unchanged) == (1, 0, 0)
    assert [(r.line, r.reason) for r in result.rejected] == [
        (2, "wecom id 'zhangsan' already belongs to p001")
    ]
    after = await people(db)
    assert "p010" not in after
    assert after["p011"].platform_ids == {"wecom": "newcomer"}
    assert after["p001"] == before["p001"]


async def test_a_platform_id_can_move_within_one_file(db: Database) -> None:
    await import_csv(db, PEOPLE_CSV)

    result = await import_wecom_rows(
        db, "p001,张三,基础教育科,staff,zhangsan2", "p010,新张三,基础教育科,staff,zhangsan"
    )

    assert result.rejected == []
    after = await people(db)
    assert after["p001"].platform_ids == {"wecom": "zhangsan2"}
    assert after["p010"].platform_ids == {"wecom": "zhangsan"}


async def test_rejected_rows_do_not_stop_the_valid_ones(db: Database) -> None:
    result = await import_csv(db, BAD_ROWS.encode())

    assert result.created == 2
    assert [r.line for r in result.rejected] == [3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
    assert set(await people(db)) == {"p001", "p008"}


async def test_only_office_or_admin_may_import(db: Database) -> None:
    staff = Actor(id="p001", roles=frozenset({Role.STAFF, Role.HEAD}), person_id="p001")
    with pytest.raises(NotAllowed):
        await import_csv(db, PEOPLE_CSV, actor=staff)
    admin = Actor(id="admin", roles=frozenset({Role.ADMIN}))
    result = await import_csv(db, PEOPLE_CSV, actor=admin)
    assert result.created == 5
    async with db.read() as s:
        assert len((await s.scalars(select(Person.id))).all()) == 5


# --- names that impersonate (issue 13, item 7) -----------------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "char"),
    [
        ("p006,\u202e五王,督导科,staff,,", "name", "U+202E"),  # right-to-left override
        ("p006,王\u200b五,督导科,staff,,", "name", "U+200B"),  # zero-width space
        ("p006,孙八,督导\u2066科,staff,,", "department", "U+2066"),  # left-to-right isolate
        ("p006\u200d,孙八,督导科,staff,,", "id", "U+200D"),  # zero-width joiner
        ("p006,孙八,督导科,staff,,zhang\ufeffsan", "wecom", "U+FEFF"),
    ],
)
def test_a_hidden_or_reordering_character_refuses_the_whole_file(
    row: str, column: str, char: str
) -> None:
    data = PEOPLE_CSV + row.encode() + b"\n"
    with pytest.raises(DirectoryFileError) as info:
        parse_people_csv(data, CSV_PLATFORMS)
    problem = info.value.problem
    assert problem.code == "unsafe_character"
    assert (problem.params["line"], problem.params["column"]) == (7, column)
    assert problem.params["char"] == char
    assert f"line 7, column {column}: {char} (" in str(info.value)


@settings(max_examples=200, deadline=None, database=None)
@given(
    row=st.integers(min_value=0, max_value=4),
    column=st.sampled_from(["id", "name", "department"]),
    at=st.integers(min_value=1, max_value=2),
    char=st.sampled_from(["\u202e", "\u200b", "\u061c", "\u2067", "\u200f", "\u2060", "\xad"]),
)
def test_a_hidden_character_in_any_row_is_named_by_line_and_column(
    row: int, column: str, at: int, char: str
) -> None:
    lines = PEOPLE_CSV.decode().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    index = header.index(column)
    cells[index] = cells[index][:at] + char + cells[index][at:]
    lines[row + 1] = ",".join(cells)
    with pytest.raises(DirectoryFileError) as info:
        parse_people_csv("\n".join(lines).encode(), CSV_PLATFORMS)
    params = info.value.problem.params
    assert (params["line"], params["column"], params["char"]) == (
        row + 2,
        column,
        f"U+{ord(char):04X}",
    )


_SAFE_CELL = st.text(alphabet=st.sampled_from('ab1;；,"\u3000 张-_.+@·'), max_size=12)


@settings(max_examples=300, deadline=None, database=None)
@given(
    header=_HEADERS,
    body=st.lists(st.lists(_SAFE_CELL, max_size=9).map(",".join), max_size=8).map("\n".join),
    encoding=st.sampled_from(["utf-8", "gb18030"]),
)
def test_rows_without_hidden_characters_are_judged_row_by_row(
    header: str, body: str, encoding: str
) -> None:
    """The file-wide refusal is only for hidden characters (here: a line break that an open
    quote pulled into a cell): otherwise bad rows are still rejected one by one, and what is
    kept is stripped and in NFC."""
    try:
        parsed = parse_people_csv((header + "\n" + body).encode(encoding), CSV_PLATFORMS)
    except DirectoryFileError as exc:
        if exc.problem.code == "unsafe_character":
            assert exc.problem.params["char"] in ("U+000A", "U+000D"), exc
        return
    assert all(r.name and r.name == clean(r.name) for r in parsed.rows)
    assert all(r.department == clean(r.department) for r in parsed.rows)


def test_names_and_departments_are_stored_in_nfc() -> None:
    data = "id,name,department,roles\np1,Jose\u0301,E\u0301cole,staff\n".encode()
    (row,) = parse_people_csv(data, CSV_PLATFORMS).rows
    assert (row.name, row.department) == ("Jos\u00e9", "\u00c9cole")


def test_the_bots_id_is_reserved() -> None:
    parsed = parse_people_csv(b"id,name,department,roles\nbot,Bot,,staff\n", CSV_PLATFORMS)
    assert parsed.rows == []
    assert [r.reason for r in parsed.rejected] == ["the id 'bot' is the bot's"]


async def test_a_platform_newcomer_cannot_take_a_name_or_hide_characters(db: Database) -> None:
    """A directory write from a platform (an unknown sender auto-registered): a display name
    that reads as one the directory has, or that hides characters, is not taken; the person
    is named by their id and the audit event says why."""
    await import_csv(db, PEOPLE_CSV)
    names_before = {p.id: p.name for p in (await people(db)).values()}
    cases = [
        ("9001", "王五", "name_taken"),
        ("9002", "王 五", "name_taken"),
        ("9003", "王\u200b五", "unsafe_characters"),
        ("9004", "\u202e五王", "unsafe_characters"),
        ("9005", "新同事", None),
    ]
    async with db.transaction() as s:
        for uid, display, _ in cases:
            await register_sender(
                s, platform="telegram", platform_user_id=uid, display_name=display, now=LATER
            )
    after = await people(db)
    assert {pid: after[pid].name for pid in names_before} == names_before
    assert [after[f"telegram-{uid}"].name for uid, _, _ in cases] == [
        "telegram-9001",
        "telegram-9002",
        "telegram-9003",
        "telegram-9004",
        "新同事",
    ]
    async with db.read() as s:
        events = (
            await s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "person.auto_register")
                .order_by(AuditEvent.seq)
            )
        ).all()
    assert [e.data.get("display_name_refused") for e in events] == [c[2] for c in cases]
