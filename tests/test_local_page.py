"""The local group's chat page in real Chromium against a real `workbot serve` subprocess."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest

try:
    from playwright.async_api import ConsoleMessage, Page, async_playwright, expect

    HAVE_PLAYWRIGHT = True
except ImportError:  # reported by the `chromium` fixture: skipped locally, a failure on CI
    HAVE_PLAYWRIGHT = False

REPO = Path(__file__).resolve().parent.parent
PEOPLE_CSV = REPO / "examples" / "people.csv"
ARTIFACTS = Path(os.environ.get("WORKBOT_ARTIFACTS", str(REPO / "tests" / "artifacts")))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NOTICE_TEXT = "通知 测试通知\n请确认。\n对象：全体\n截止：2030-12-10 17:00"
STARTUP_SECONDS = 60.0
STOP_SECONDS = 20.0
WAIT_MS = 20_000
ROOM_READ = re.compile(r"/local/v1/(messages\?|stream)")  # a GET of the room (a POST has no ?)


@dataclass(frozen=True)
class Group:
    """A running `workbot serve` with the example directory imported."""

    base: str
    office: str  # a person with the office role: may post notices
    staff: str  # a plain staff member: an assignee of a notice for everyone


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer machine without a browser; fail loudly on CI, where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required when CI is set)", pytrace=False)
    pytest.skip(reason)


def first_with_role(role: str) -> str:
    """The id of the first person in the example directory holding exactly this role."""
    with PEOPLE_CSV.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["roles"].split(";") == [role]:
                return row["id"]
    raise AssertionError(f"{PEOPLE_CSV} has nobody with only the {role} role")


def log_tail(log: Path) -> str:
    """The end of the server's output, for failure messages."""
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-3000:]
    except OSError:
        return ""


async def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> None:
    """Run one `workbot` command to completion; fail with its output if it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), STARTUP_SECONDS)
    assert proc.returncode == 0, f"workbot {' '.join(args)}: {out.decode(errors='replace')}"


async def wait_healthy(base: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Poll /healthz until it answers 200, failing early if the server exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if proc.returncode is not None:
                raise AssertionError(
                    f"workbot serve exited with {proc.returncode}:\n{log_tail(log)}"
                )
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise AssertionError(f"/healthz never answered 200:\n{log_tail(log)}")
            await asyncio.sleep(0.1)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium for Playwright to drive (Playwright's own browser download is not used)."""
    if not HAVE_PLAYWRIGHT:
        unavailable("the playwright package is not installed")
    path = shutil.which("chromium")
    if path is None:
        unavailable("no chromium on PATH (Debian package: chromium)")
    return path


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[Group]:
    """`workbot serve` on a free port with a fresh SQLite database and the example directory."""
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nport = {port}\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/wb.db"\n',
        encoding="utf-8",
    )
    env = dict(os.environ)
    env.pop("WORKBOT_CONFIG", None)
    await run_cli("migrate", "-c", str(config), cwd=tmp_path, env=env)
    await run_cli("people", "import", "-c", str(config), str(PEOPLE_CSV), cwd=tmp_path, env=env)
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    # Output goes to a file rather than a pipe: nobody has to drain it, nothing is left open.
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "-c", str(config),
            cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await wait_healthy(base, proc, log)
        yield Group(base, first_with_role("office"), first_with_role("staff"))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_SECONDS)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError(f"workbot serve ignored SIGTERM:\n{log_tail(log)}") from None
    assert proc.returncode == 0, f"workbot serve exited with {proc.returncode}:\n{log_tail(log)}"


def watch_for_errors(page: Page, errors: list[str]) -> None:
    """Collect uncaught page exceptions and console errors (a failed request logs one)."""

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text} ({msg.location.get('url')})")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", on_console)


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go: $WORKBOT_ARTIFACTS, else tests/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


async def post_notice(group: Group) -> None:
    """The office posts a notice for everyone in the group, as a person would."""
    async with aiohttp.ClientSession() as http:
        body = {"sender": group.office, "text": NOTICE_TEXT, "reply_to": None}
        async with http.post(f"{group.base}/local/v1/messages", json=body) as resp:
            assert resp.status == 201, await resp.text()
            assert isinstance((await resp.json())["id"], int)


async def ack_on_desktop(page: Page, group: Group, screenshot: Path) -> tuple[str, str]:
    """Pick a staff member, click 收到 on the notice's card; returns (message id, N)."""
    navigations: list[str] = []
    await page.goto(f"{group.base}/local/")
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    await expect(page).to_have_title("workbot 本地工作群")
    await expect(page.get_by_test_id("footer-note")).to_contain_text("无身份验证")
    await expect(page.get_by_test_id("send")).to_be_disabled()

    await page.get_by_test_id("who").select_option(group.staff)
    await expect(page.get_by_test_id("send")).to_be_enabled()

    tally = page.locator("#timeline .card", has_text="测试通知").locator(".tally")
    await expect(tally).to_have_text(re.compile(r"已确认 0/\d+"), timeout=WAIT_MS)
    found = re.search(r"已确认 0/(\d+)", await tally.inner_text())
    assert found is not None
    total = found.group(1)
    testid = await tally.get_attribute("data-testid")
    assert testid is not None and re.fullmatch(r"tally-\d+", testid), testid
    message_id = testid.removeprefix("tally-")
    node = page.locator(f"#m-{message_id}")
    await expect(node).to_have_count(1)
    ack = page.get_by_test_id(re.compile(rf"^btn-{message_id}-\d+$")).filter(
        has_text=re.compile(r"^\s*收到\s*$")
    )

    # Marks that a reload, or a re-render of the message, would wipe out.
    await page.evaluate("window.__sameDocument = true")
    await node.evaluate("n => { n.__sameNode = true }")
    url = page.url
    await ack.click()

    await expect(tally).to_have_text(re.compile(rf"已确认 1/{total}(?!\d)"), timeout=WAIT_MS)
    await expect(node.locator(".edited")).to_be_visible()
    assert page.url == url
    assert navigations == []
    assert await page.evaluate("window.__sameDocument === true")
    assert await node.evaluate("n => n.__sameNode === true")

    # The composer: Enter sends, and the text arrives as text, never as markup.
    text = page.get_by_test_id("text")
    await text.fill("大家好 <b>不是粗体</b>\n第二行")
    await text.press("Enter")
    mine = page.locator("#timeline > li.mine", has_text="大家好 <b>不是粗体</b>")
    await expect(mine.locator(".text")).to_have_text(
        "大家好 <b>不是粗体</b>\n第二行", timeout=WAIT_MS
    )
    assert await mine.locator(".text").inner_text() == "大家好 <b>不是粗体</b>\n第二行"
    await expect(page.locator("#timeline b, #timeline img")).to_have_count(0)
    await expect(text).to_have_value("")

    await page.screenshot(path=str(screenshot))
    return message_id, total


async def check_phone(page: Page, group: Group, message_id: str, acked: str, shot: Path) -> None:
    """At 375x667 the room is usable: the tally, the composer, the DM toggle, no sideways scroll."""
    await page.goto(f"{group.base}/local/")
    await page.get_by_test_id("who").select_option(group.staff)
    tally = page.get_by_test_id(f"tally-{message_id}")
    await expect(tally).to_have_text(re.compile(rf"{re.escape(acked)}(?!\d)"), timeout=WAIT_MS)
    await expect(page.get_by_test_id("dm-toggle")).to_be_visible()
    await expect(page.get_by_test_id("dms")).to_be_hidden()
    await expect(page.get_by_test_id("send")).to_be_in_viewport()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways on a phone: {width}px"
    await page.screenshot(path=str(shot))


async def test_ack_button_updates_the_tally_in_place(
    chromium: str, group: Group, artifacts: Path
) -> None:
    await post_notice(group)
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            desktop = await browser.new_context(viewport={"width": 1280, "height": 800})
            try:
                page = await desktop.new_page()
                watch_for_errors(page, errors)
                message_id, total = await ack_on_desktop(page, group, artifacts / "local_page.png")
            finally:
                await desktop.close()
            phone = await browser.new_context(viewport={"width": 375, "height": 667})
            try:
                page = await phone.new_page()
                watch_for_errors(page, errors)
                shot = artifacts / "local_page_phone.png"
                await check_phone(page, group, message_id, f"已确认 1/{total}", shot)
            finally:
                await phone.close()
        finally:
            await browser.close()
    assert errors == [], errors


async def test_the_page_reads_only_the_dms_of_whom_it_is(chromium: str, group: Group) -> None:
    """The page asks for its own DMs (for=), and switching who one is swaps the DM panel:
    the office's DM never reaches a staff member's page, nor the staff's the office's."""
    await post_notice(group)  # the office gets a private 已发布 note
    errors: list[str] = []
    reads: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            watch_for_errors(page, errors)
            page.on("request", lambda r: reads.append(r.url) if ROOM_READ.search(r.url) else None)
            await page.goto(f"{group.base}/local/")
            await page.get_by_test_id("who").select_option(group.staff)
            await expect(page.locator("#timeline .card", has_text="测试通知")).to_have_count(1)
            await page.get_by_test_id("text").fill("待办")
            await page.get_by_test_id("text").press("Enter")
            dms = page.locator("#dm-list")
            await expect(dms).to_contain_text("您的待办", timeout=WAIT_MS)
            await expect(dms).not_to_contain_text("已发布")
            staff_reads = [u for u in reads if f"for={group.staff}" in u]
            assert staff_reads, reads

            await page.get_by_test_id("who").select_option(group.office)
            await expect(dms).to_contain_text("已发布", timeout=WAIT_MS)
            await expect(dms).not_to_contain_text("您的待办")
            assert [u for u in reads if f"for={group.office}" in u], reads
            await context.close()
        finally:
            await browser.close()
    assert errors == [], errors
    # Once someone is picked, every read (listing and stream) names them.
    assert all("for=" in u for u in reads[reads.index(staff_reads[0]) :]), reads
    assert [u for u in reads if "/local/v1/stream?for=" in u], reads
