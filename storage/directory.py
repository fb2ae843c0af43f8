"""The people directory: parsing the CSV (pure) and upserting it (one transaction)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.domain import Actor
from storage.models import Person, PersonIdentity
from storage.types import Role

REQUIRED_COLUMNS = ("id", "name", "department", "roles")
PLATFORM_COLUMNS = ("wecom", "dingtalk", "feishu", "matrix", "onebot", "telegram", "local")
OPTIONAL_COLUMNS = ("phone", *PLATFORM_COLUMNS)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PHONE_PATTERN = re.compile(r"^\+?[0-9][0-9\- ]{2,30}$")


class DirectoryFileError(Exception):
    """The file as a whole cannot be imported (encoding, header); nothing was written."""


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
    reason: str


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
        raise DirectoryFileError(f"not UTF-8 or GB18030 text (byte {exc.start})") from None


def parse_people_csv(data: bytes) -> ParsedDirectory:
    """Parse the directory CSV: valid rows, and every rejected row with its reason."""
    text, encoding = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DirectoryFileError("the file is empty") from None
    except csv.Error as exc:
        raise DirectoryFileError(f"line 1: {exc}") from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DirectoryFileError("missing column(s): " + ", ".join(missing))
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise DirectoryFileError(
            "unknown column(s): "
            + ", ".join(unknown)
            + " (allowed: "
            + ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
            + ")"
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DirectoryFileError("duplicate column(s): " + ", ".join(dupes))
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
            raise DirectoryFileError(f"line {reader.line_num}: {exc}") from None
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(columns):
            rejected.append(
                RejectedRow(line, f"{len(record)} fields, the header has {len(columns)}")
            )
            continue
        cells = {
            col: (record[i].strip() if i < len(record) else "") for i, col in enumerate(columns)
        }
        problems: list[str] = []
        pid = cells["id"]
        if not pid:
            problems.append("missing id")
        elif not ID_PATTERN.match(pid):
            problems.append(f"invalid id {pid!r} (letters, digits, _ . -; at most 64)")
        elif pid in seen_ids:
            problems.append(f"duplicate id {pid!r} (first on line {seen_ids[pid]})")
        name = cells["name"]
        if not name:
            problems.append("missing name")
        elif len(name) > 100:
            problems.append("name longer than 100 characters")
        department = cells["department"]
        if len(department) > 100:
            problems.append("department longer than 100 characters")
        roles = tuple(
            dict.fromkeys(
                r.strip().lower() for r in re.split(r"[;；]", cells["roles"]) if r.strip()
            )
        )
        bad_roles = [r for r in roles if r not in valid_roles]
        if bad_roles:
            problems.append(
                "unknown role(s) "
                + ", ".join(repr(r) for r in bad_roles)
                + " (use staff, office, head, admin)"
            )
        phone = cells.get("phone", "") or None
        if phone is not None and not PHONE_PATTERN.match(phone):
            problems.append(f"invalid phone {phone!r}")
        platform_ids = {p: cells[p] for p in PLATFORM_COLUMNS if cells.get(p)}
        for platform, uid in platform_ids.items():
            owner = seen_platform.get((platform, uid))
            if owner is not None and owner[0] != pid:
                problems.append(
                    f"{platform} id {uid!r} already given to {owner[0]} on line {owner[1]}"
                )
        if problems:
            rejected.append(RejectedRow(line, "; ".join(problems)))
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
            f"{p} id {uid!r} already belongs to {owners[(p, uid)]}"
            for p, uid in row.platform_ids.items()
            if owners.get((p, uid)) not in (None, row.id) and owners[(p, uid)] not in file_ids
        ]
        if clash:
            rejected.append(RejectedRow(row.line, "; ".join(clash)))
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
