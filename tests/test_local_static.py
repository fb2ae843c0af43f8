"""The local group's page is served from memory: a reinstall cannot break a running server,
and an address under /local/ that holds nothing is a plain 404 page, never a download."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.config import validate_config
from bot.platforms import local

TYPES = {
    "/local/": ("index.html", "text/html; charset=utf-8"),
    "/local/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/local/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
NOT_FOUND = {
    "zh-CN": "这个地址没有页面。本地工作群在 /local/。",
    "en": "There is no page at this address. The local group is at /local/.",
}


def app_for(tmp_path: Path, language: str = "zh-CN") -> TestServer:
    url = f"sqlite+aiosqlite:///{tmp_path / 'page.db'}"
    raw = {"database": {"url": url}, "bot": {"language": language}}
    return TestServer(create_app(validate_config(raw, "<test>", {}), {}, workers=False))


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's page files, which the server under test starts from."""
    copy = tmp_path / "site-packages" / "bot" / "platforms" / "local_static"
    shutil.copytree(local.STATIC, copy)
    monkeypatch.setattr(local, "STATIC", copy)
    return copy


def move_away(directory: Path) -> None:
    """The directory the server started from is renamed, as a reinstall does."""
    directory.rename(directory.with_name("local_static.old"))


@pytest.fixture
async def client(tmp_path: Path, installed: Path) -> AsyncIterator[TestClient[object, object]]:
    async with TestClient(app_for(tmp_path)) as c:
        yield c


async def test_the_page_survives_a_reinstall_that_moves_its_files(
    client: TestClient[object, object], installed: Path
) -> None:
    originals = {path: (installed / name).read_bytes() for path, (name, _) in TYPES.items()}
    # What `pip install -e .` does to a running server's package: the files move away, and a
    # new version may arrive later.
    move_away(installed)
    for path, (_, content_type) in TYPES.items():
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"] == content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == originals[path]
    shutil.rmtree(installed.with_name("local_static.old"))
    assert (await client.get("/local/static/app.js")).status == 200


async def test_the_page_files_carry_a_strong_etag_and_answer_304(
    client: TestClient[object, object],
) -> None:
    for path in TYPES:
        first = await client.get(path)
        etag = first.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"')  # strong
        assert first.headers["Cache-Control"] == "no-cache"
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await client.get(path, headers={"If-None-Match": sent})
            assert again.status == 304, (path, sent)
            assert await again.read() == b""
            assert again.headers["ETag"] == etag
        changed = await client.get(path, headers={"If-None-Match": '"stale"'})
        assert changed.status == 200
        assert await changed.read() == await first.read()


@pytest.mark.parametrize(
    "path",
    [
        "/local/nothing-here",
        "/local/static/nothing.js",
        "/local/static/",
        "/local/static/..%2Fcli.py",
        "/local/index.html",
    ],
)
async def test_an_unknown_address_under_local_is_a_plain_404_page(
    client: TestClient[object, object], path: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    body = await resp.text()
    assert '<html lang="zh-CN">' in body
    assert NOT_FOUND["zh-CN"] in body
    assert NOT_FOUND["en"] not in body


async def test_an_unknown_api_address_is_a_json_404(client: TestClient[object, object]) -> None:
    """The API's clients read JSON: an unknown /local/v1/ address answers its error object."""
    resp = await client.get("/local/v1/nothing")
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("application/json")
    error = (await resp.json())["error"]
    assert error["code"] == "not_found" and error["message"] == "没有这个地址。"


async def test_the_404_page_is_in_the_bots_language(tmp_path: Path, installed: Path) -> None:
    async with TestClient(app_for(tmp_path, "en")) as client:
        resp = await client.get("/local/nothing-here")
        assert resp.status == 404
        body = await resp.text()
        assert '<html lang="en">' in body and NOT_FOUND["en"] in body
        assert NOT_FOUND["zh-CN"] not in body
