"""The people directory: parsing the CSV (pure) and upserting it (one transaction)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit, readable
from storage.domain import Actor
from storage.models import Person, PersonIdentity
from storage.types import Role

REQUIRED_COLUMNS = ("id", "name", "department", "roles")
RESERVED_IDS = frozenset({"bot"})  # the bot's own sender id in the local group
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PHONE_PATTERN = re.compile(r"^\+?[0-9][0-9\- ]{2,30}$")


# English templates (for logs and tests); the CLI renders the codes from its catalogs.
REASONS: dict[str, str] = {
    "encoding": "not UTF-8 or GB18030 text (byte {offset})",
    "empty": "the file is empty",
    "csv_syntax": "line {line}: {detail}",
    "unsafe_character": (
        "line {line}, column {column}: {char} ({char_name}) hides or reorders text; "
        "remove it (nothing was imported)"
    ),
    "missing_columns": "missing column(s): {columns}",
    "unknown_columns": "unknown column(s): {columns} (allowed: {allowed})",
    "duplicate_columns": "duplicate column(s): {columns}",
    "field_count": "{fields} fields, the header has {columns}",
    "missing_id": "missing id",
    "invalid_id": "invalid id {id!r} (letters, digits, _ . -; at most 64)",
    "reserved_id": "the id {id!r} is the bot's",
    "duplicate_id": "duplicate id {id!r} (first on line {first})",
    "missing_name": "missing name",
    "name_too_long": "name longer than 100 characters",
    "department_too_long": "department longer than 100 characters",
    "unknown_roles": "unknown role(s) {roles} (use staff, office, head, admin)",
    "invalid_phone": "invalid phone {phone!r}",
    "platform_id_reused": "{platform} id {uid!r} already given to {owner} on line {first}",
    "platform_id_owned": "{platform} id {uid!r} already belongs to {owner}",
}


@dataclass(frozen=True)
class Problem:
    """One reason, as a stable code with its parameters."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return REASONS[self.code].format(**self.params)


class DirectoryFileError(Exception):
    """The file as a whole cannot be imported (encoding, header); nothing was written."""

    def __init__(self, code: str, **params: Any) -> None:
        self.problem = Problem(code, params)
        super().__init__(str(self.problem))


@dataclass(frozen=True)
class PersonRow:
    """One valid directory row."""

    line: int
    id: str
    name: str
    department: str
    roles: tuple[str, ...]
    phone: str | None
    platform_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported, with the line number and the reason."""

    line: int
    problems: tuple[Problem, ...]

    @property
    def reason(self) -> str:
        """The reasons in English, separated by '; '."""
        return "; ".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class ParsedDirectory:
    """The result of parsing a directory CSV."""

    rows: list[PersonRow]
    rejected: list[RejectedRow]
    encoding: str


def decode(data: bytes) -> tuple[str, str]:
    """Decode UTF-8 (with or without BOM), else GB18030 as Chinese spreadsheets export it."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as exc:
        raise DirectoryFileError("encoding", offset=exc.start) from None


def parse_people_csv(data: bytes, platforms: Sequence[str]) -> ParsedDirectory:
    """Parse the directory CSV: valid rows, and every rejected row with its reason.

    `platforms` are the optional per-platform columns (people's user ids there): the caller
    passes the platform list's columns; storage itself knows no platform."""
    optional = ("phone", *platforms)
    text, encoding = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DirectoryFileError("empty") from None
    except csv.Error as exc:
        raise DirectoryFileError("csv_syntax", line=1, detail=str(exc)) from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DirectoryFileError("missing_columns", columns=", ".join(missing))
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + optional]
    if unknown:
        raise DirectoryFileError(
            "unknown_columns",
            columns=", ".join(unknown),
            allowed=", ".join(REQUIRED_COLUMNS + optional),
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DirectoryFileError("duplicate_columns", columns=", ".join(dupes))
    rows: list[PersonRow] = []
    rejected: list[RejectedRow] = []
    seen_ids: dict[str, int] = {}
    seen_platform: dict[tuple[str, str], tuple[str, int]] = {}
    valid_roles = {r.value for r in Role}
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DirectoryFileError("csv_syntax", line=reader.line_num, detail=str(exc)) from None
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        for index, cell in enumerate(record):
            unsafe = readable.first_refused(cell.strip())
            if unsafe is not None:
                # A hidden or reordering character in a directory is not a typo: refuse the file.
                raise DirectoryFileError(
                    "unsafe_character",
                    line=line,
                    column=columns[index] if index < len(columns) else str(index + 1),
                    char=unsafe.code_point,
                    char_name=unsafe.char_name,
                )
        if len(record) > len(columns):
            rejected.append(
                RejectedRow(
                    line,
                    (Problem("field_count", {"fields": len(record), "columns": len(columns)}),),
                )
            )
            continue
        cells = {
            col: (record[i].strip() if i < len(record) else "") for i, col in enumerate(columns)
        }
        problems: list[Problem] = []
        pid = cells["id"]
        if not pid:
            problems.append(Problem("missing_id"))
        elif not ID_PATTERN.match(pid):
            problems.append(Problem("invalid_id", {"id": pid}))
        elif pid in RESERVED_IDS:
            problems.append(Problem("reserved_id", {"id": pid}))
        elif pid in seen_ids:
            problems.append(Problem("duplicate_id", {"id": pid, "first": seen_ids[pid]}))
        name = readable.clean(cells["name"])
        if not name:
            problems.append(Problem("missing_name"))
        elif len(name) > 100:
            problems.append(Problem("name_too_long"))
        department = readable.clean(cells["department"])
        if len(department) > 100:
            problems.append(Problem("department_too_long"))
        roles = tuple(
            dict.fromkeys(
                r.strip().lower() for r in re.split(r"[;；]", cells["roles"]) if r.strip()
            )
        )
        bad_roles = [r for r in roles if r not in valid_roles]
        if bad_roles:
            roles_text = ", ".join(repr(r) for r in bad_roles)
            problems.append(Problem("unknown_roles", {"roles": roles_text}))
        phone = cells.get("phone", "") or None
        if phone is not None and not PHONE_PATTERN.match(phone):
            problems.append(Problem("invalid_phone", {"phone": phone}))
        platform_ids = {p: cells[p] for p in platforms if cells.get(p)}
        for platform, uid in platform_ids.items():
            owner = seen_platform.get((platform, uid))
            if owner is not None and owner[0] != pid:
                params = {"platform": platform, "uid": uid, "owner": owner[0], "first": owner[1]}
                problems.append(Problem("platform_id_reused", params))
        if problems:
            rejected.append(RejectedRow(line, tuple(problems)))
            continue
        seen_ids[pid] = line
        for platform, uid in platform_ids.items():
            seen_platform[(platform, uid)] = (pid, line)
        rows.append(
            PersonRow(
                line, pid, name, department, roles or (Role.STAFF.value,), phone, platform_ids
            )
        )
    return ParsedDirectory(rows, rejected, encoding)


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    created: int
    updated: int
    unchanged: int
    rejected: list[RejectedRow]


async def upsert_people(
    session: AsyncSession, parsed: ParsedDirectory, *, actor: Actor, now: dt.datetime
) -> ImportResult:
    """Upsert the valid rows; a platform id owned by someone outside the file rejects its row."""
    actor.require("people_import", Role.OFFICE, Role.ADMIN)
    rejected = list(parsed.rejected)
    incoming_ids = [r.id for r in parsed.rows]
    existing = {
        p.id: p
        for p in (await session.scalars(select(Person).where(Person.id.in_(incoming_ids)))).all()
    }
    owners: dict[tuple[str, str], str] = {}
    wanted = {(p, uid) for r in parsed.rows for p, uid in r.platform_ids.items()}
    if wanted:
        for ident in (
            await session.scalars(
                select(PersonIdentity).where(
                    PersonIdentity.platform_user_id.in_({uid for _, uid in wanted})
                )
            )
        ).all():
            owners[(ident.platform, ident.platform_user_id)] = ident.person_id
    current: dict[str, dict[str, str]] = {}
    for ident in (
        await session.scalars(
            select(PersonIdentity).where(PersonIdentity.person_id.in_(incoming_ids))
        )
    ).all():
        current.setdefault(ident.person_id, {})[ident.platform] = ident.platform_user_id
    file_ids = set(incoming_ids)
    created = updated = unchanged = 0
    changed_ids: list[str] = []
    for row in parsed.rows:
        clash = [
            Problem("platform_id_owned", {"platform": p, "uid": uid, "owner": owners[(p, uid)]})
            for p, uid in row.platform_ids.items()
            if owners.get((p, uid)) not in (None, row.id) and owners[(p, uid)] not in file_ids
        ]
        if clash:
            rejected.append(RejectedRow(row.line, tuple(clash)))
            continue
        person = existing.get(row.id)
        ids_changed = any(
            current.get(row.id, {}).get(p) != uid for p, uid in row.platform_ids.items()
        )
        if person is None:
            session.add(
                Person(
                    id=row.id,
                    name=row.name,
                    department=row.department,
                    roles=list(row.roles),
                    phone=row.phone,
                    auto_registered=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            created += 1
            changed_ids.append(row.id)
        else:
            fields = (row.name, row.department, list(row.roles), row.phone)
            same = (person.name, person.department, list(person.roles), person.phone) == fields
            if same and not ids_changed:
                unchanged += 1
            else:
                person.name, person.department, person.roles, person.phone = fields
                person.updated_at = now
                updated += 1
                changed_ids.append(row.id)
            person.auto_registered = False
    await session.flush()
    rejected_lines = {x.line for x in rejected}
    accepted = [r for r in parsed.rows if r.line not in rejected_lines]
    for row in accepted:
        for platform, uid in row.platform_ids.items():
            if current.get(row.id, {}).get(platform) == uid:
                continue
            await session.execute(
                delete(PersonIdentity).where(
                    (PersonIdentity.platform == platform)
                    & (
                        (PersonIdentity.person_id == row.id)
                        | (PersonIdentity.platform_user_id == uid)
                    )
                )
            )
            session.add(PersonIdentity(platform=platform, platform_user_id=uid, person_id=row.id))
        await session.flush()
    if changed_ids:
        await audit.append(
            session,
            actor=actor.id,
            action="directory.import",
            entity="directory",
            entity_id="people",
            data={
                "created": created,
                "updated": updated,
                "unchanged": unchanged,
                "rejected": len(rejected),
                "changed": changed_ids,
            },
            now=now,
        )
    rejected.sort(key=lambda r: r.line)
    return ImportResult(created, updated, unchanged, rejected)


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


async def person_for(session: AsyncSession, platform: str, platform_user_id: str) -> Person | None:
    """The directory person behind a platform account (the local group uses directory ids)."""
    person_id = await session.scalar(
        select(PersonIdentity.person_id).where(
            PersonIdentity.platform == platform,
            PersonIdentity.platform_user_id == platform_user_id,
        )
    )
    if person_id is not None:
        return await session.get(Person, person_id)
    if platform == "local":
        return await session.get(Person, platform_user_id)
    return None


async def register_sender(
    session: AsyncSession,
    *,
    platform: str,
    platform_user_id: str,
    display_name: str,
    now: dt.datetime,
) -> Person:
    """Add an unknown sender in the bound group to the directory as staff (docs/architecture.md).

    The platform's display name becomes the person's name unless it holds a character that
    hides or reorders text, or reads as a name or an id the directory already has: then the
    person is named by their id (the office can rename them with an import)."""
    existing = await person_for(session, platform, platform_user_id)
    if existing is not None:
        return existing
    if platform == "local" and _ID_UNSAFE.sub("", platform_user_id) == platform_user_id:
        base = platform_user_id[:64]
    else:
        base = f"{platform}-{_ID_UNSAFE.sub('_', platform_user_id)}"[:64]
    person_id = base
    suffix = 1
    while await session.get(Person, person_id) is not None:
        suffix += 1
        person_id = f"{base[: 64 - len(str(suffix)) - 1]}-{suffix}"
    name, refusal = await _newcomer_name(session, display_name, platform_user_id, person_id)
    person = Person(
        id=person_id,
        name=name,
        department="",
        roles=[Role.STAFF.value],
        phone=None,
        auto_registered=True,
        created_at=now,
        updated_at=now,
    )
    session.add(person)
    session.add(
        PersonIdentity(platform=platform, platform_user_id=platform_user_id, person_id=person_id)
    )
    await session.flush()
    await audit.append(
        session,
        actor=f"{platform}:{platform_user_id}"[:100],
        action="person.auto_register",
        entity="person",
        entity_id=person_id,
        data={
            "platform": platform,
            "platform_user_id": platform_user_id,
            "name": name,
            **({"display_name_refused": refusal} if refusal else {}),
        },
        now=now,
    )
    return person


async def _newcomer_name(
    session: AsyncSession, display_name: str, platform_user_id: str, person_id: str
) -> tuple[str, str | None]:
    """A newcomer's name, and why their display name was not taken (None if it was)."""
    try:
        wanted = readable.clean(display_name)[:100]
    except readable.UnsafeText:
        return person_id, "unsafe_characters"
    fallback = platform_user_id if readable.first_refused(platform_user_id) is None else person_id
    name = wanted or fallback[:100]
    if await name_taken(session, name):
        return person_id, "name_taken"
    return name, None


async def name_taken(session: AsyncSession, name: str) -> bool:
    """Whether a name reads as a name or an id the directory already has (readable.name_key):
    people are referred to by either."""
    rows = (await session.execute(select(Person.id, Person.name))).all()
    return readable.taken(name, [text for row in rows for text in row])


async def get_person(session: AsyncSession, person_id: str) -> Person | None:
    """One person by directory id."""
    return await session.get(Person, person_id)


async def list_people(session: AsyncSession) -> list[Person]:
    """Everyone, by department and id."""
    return list(
        (await session.scalars(select(Person).order_by(Person.department, Person.id))).all()
    )


async def names(session: AsyncSession) -> dict[str, str]:
    """Every person's name by id."""
    return {pid: name for pid, name in (await session.execute(select(Person.id, Person.name)))}


async def is_empty(session: AsyncSession) -> bool:
    """Whether the directory has nobody yet."""
    return await session.scalar(select(Person.id).limit(1)) is None


async def departments(session: AsyncSession) -> set[str]:
    """The departments people belong to."""
    return set((await session.scalars(select(Person.department).distinct())).all())


async def people_named(session: AsyncSession, ref: str) -> list[Person]:
    """The people whose id or name is `ref` (an id matches at most one)."""
    return list(
        await session.scalars(select(Person).where((Person.name == ref) | (Person.id == ref)))
    )


async def platform_user_id(session: AsyncSession, person_id: str, platform: str) -> str | None:
    """A person's user id on a platform, if they have one."""
    return await session.scalar(
        select(PersonIdentity.platform_user_id).where(
            PersonIdentity.person_id == person_id, PersonIdentity.platform == platform
        )
    )
