"""The web page at `/` in a real browser (Debian's Chromium through Playwright) against a real running API
serving a small model package: what the page draws and counts is what the API answers for the same tile.

Screenshots go to each test's tmp dir (``screenshots/``); docs/images/ holds copies of the best ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from parking_ml.config import Settings
from parking_ml.data.images import encode_png
from serving.app import create_app
from tests.fakes.landing import geotiff_bytes
from tests.fakes.packages import make_package
from tests.fakes.scenes import lot_image
from tests.fakes.servers import running, wait_ready

pytestmark = pytest.mark.integration

KEY = "web-page-test-key-0123456789"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("web-model") / "model")


def _serve(tmp_path_factory, package: Path, keys: list[str]) -> Iterator[str]:
    settings = Settings(home=tmp_path_factory.mktemp("web-home"), model_dir=package, api_keys=keys, threads=1)
    with running(create_app(settings)) as url:
        wait_ready(url)  # /readyz needs no key
        yield url


@pytest.fixture(scope="module")
def api_open(tmp_path_factory, package) -> Iterator[str]:
    yield from _serve(tmp_path_factory, package, [])


@pytest.fixture(scope="module")
def api_keyed(tmp_path_factory, package) -> Iterator[str]:
    yield from _serve(tmp_path_factory, package, [KEY])


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    path = tmp_path / "screenshots"
    path.mkdir()
    return path


@contextmanager
def open_page(browser, url: str, viewport: dict = DESKTOP, touch: bool = False) -> Iterator[object]:
    """A fresh browser context (its own sessionStorage) on the page; script errors and CSP refusals fail."""
    context = browser.new_context(viewport=viewport, has_touch=touch)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    response = page.goto(f"{url}/")
    assert response is not None and response.status == 200
    try:
        yield page
    finally:
        context.close()
    assert problems == []


def choose(page, name: str, data: bytes, mime: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Image (PNG, JPEG or GeoTIFF)").set_input_files({"name": name, "mimeType": mime, "buffer": data})
    expect(page.get_by_role("button", name="Find spaces")).to_be_enabled()


def predict_json(url: str, name: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"file": (name, data)}, params=params, timeout=60)


def drawn_spaces(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#overlay polygon",
        """els => els.map(e => ({id: Number(e.dataset.id), status: e.dataset.status,
            points: e.getAttribute('points').split(' ').map(p => p.split(',').map(Number))}))""",
    )


def assert_drawn_as_answered(page, answer: dict) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#output")).to_be_visible()
    assert page.locator("#free-count").inner_text() == str(answer["free_spaces"])
    assert page.locator("#occupied-count").inner_text() == str(answer["occupied_spaces"])
    rate = answer["occupancy_rate"]
    assert page.locator("#occupancy").inner_text() == ("–" if rate is None else f"{rate * 100:.1f}%")
    drawn = {s["id"]: s for s in drawn_spaces(page)}
    assert len(drawn) == len(answer["spaces"])
    assert page.locator("#overlay polygon.free").count() == answer["free_spaces"]
    assert page.locator("#overlay polygon.occupied").count() == answer["occupied_spaces"]
    for space in answer["spaces"]:
        assert drawn[space["id"]]["status"] == space["status"]
        flat = [v for point in space["polygon"] for v in point]
        assert [v for point in drawn[space["id"]]["points"] for v in point] == pytest.approx(flat)
    view_box = page.get_attribute("#overlay", "viewBox")
    assert view_box == f"0 0 {answer['width']} {answer['height']}"
    facts = page.locator("#facts").inner_text()
    assert f"{answer['model']['name']} v{answer['model']['version']}" in facts
    # each request has its own id: the page shows the one of its own request
    assert re.search(r"Request id\n[0-9a-f]{32}$", facts) and " ms in all" in facts


def test_a_tile_shows_the_apis_spaces_counts_and_confidences(browser, api_open, shots):
    from playwright.sync_api import expect

    png = encode_png(lot_image(360, 480, seed=3))
    expected = predict_json(api_open, "lot.png", png, gsd="0.1").json()
    assert expected["free_spaces"] > 0 and expected["occupied_spaces"] > 0

    with open_page(browser, api_open) as page:
        choose(page, "lot.png", png, "image/png")
        gsd = page.get_by_label("Ground resolution (m/px, optional)")
        gsd.fill("0.1")
        with page.expect_request("**/v1/predict?gsd=0.1") as sent:
            gsd.press("Enter")  # the keyboard submits the form
        assert "x-api-key" not in sent.value.headers  # no key typed: none sent
        assert_drawn_as_answered(page, expected)
        expect(page.get_by_role("status")).to_contain_text(
            f"Found {expected['free_spaces']} free and {expected['occupied_spaces']} occupied"
        )

        # the picture itself under the polygons, at the same place and size
        natural = page.eval_on_selector("#picture", "img => [img.naturalWidth, img.naturalHeight, img.hidden]")
        assert natural == [480, 360, False]
        img_box, svg_box = page.locator("#picture").bounding_box(), page.locator("#overlay").bounding_box()
        assert img_box == pytest.approx(svg_box, abs=1)
        assert img_box["width"] / img_box["height"] == pytest.approx(480 / 360, rel=0.01)

        # hover a space: its confidence as the API gave it
        space = max(expected["spaces"], key=lambda s: s["area_px"])
        page.locator(f'#overlay polygon[data-id="{space["id"]}"]').hover()
        tooltip = page.locator("#tooltip")
        expect(tooltip).to_be_visible()
        expect(tooltip).to_contain_text(f"#{space['id']}: confidence {space['confidence'] * 100:.1f}%")

        # every space is also in a table a keyboard or screen-reader user can open
        page.get_by_text("Every space with its confidence").click()
        expect(page.locator("#space-rows tr")).to_have_count(len(expected["spaces"]))

        # focus is visible when moving by keyboard
        gsd.focus()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "api-key"
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        page.locator("body").click(position={"x": 5, "y": 5})
        page.mouse.move(0, 0)
        page.screenshot(path=str(shots / "web-page.png"), full_page=True)


def test_a_file_dropped_on_the_box_is_sent(browser, api_open):
    from playwright.sync_api import expect

    png = encode_png(lot_image(200, 240, seed=6))
    expected = predict_json(api_open, "dropped.png", png).json()
    with open_page(browser, api_open) as page:
        # what a drag from the desktop delivers: a drop event carrying the file
        transfer = page.evaluate_handle(
            """([name, bytes]) => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
                return dt;
            }""",
            ["dropped.png", list(png)],
        )
        page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
        expect(page.locator("#drop-zone")).to_have_class("drop dragging")
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        expect(page.locator("#file-name")).to_contain_text("dropped.png")
        page.get_by_role("button", name="Find spaces").click()
        assert_drawn_as_answered(page, expected)


def test_a_non_image_file_shows_the_apis_own_message(browser, api_open, shots):
    from playwright.sync_api import expect

    notes = b"shopping list: bread, milk\n"
    refused = predict_json(api_open, "notes.txt", notes)
    assert refused.status_code == 415
    error = refused.json()["error"]

    with open_page(browser, api_open) as page:
        choose(page, "notes.txt", notes, "text/plain")
        page.get_by_role("button", name="Find spaces").click()
        alert = page.get_by_role("alert")
        expect(alert).to_be_visible()
        assert page.locator(".error-message").inner_text() == error["message"]
        assert page.locator(".error-code").inner_text() == f"{error['code']} · HTTP 415"
        expect(page.locator("#output")).to_be_hidden()
        page.screenshot(path=str(shots / "web-page-error.png"))


def test_the_key_field_sends_x_api_key_and_lives_in_this_tab_only(browser, api_keyed, shots):
    from playwright.sync_api import expect

    png = encode_png(lot_image(200, 240, seed=4))
    refused = predict_json(api_keyed, "lot.png", png)
    assert refused.status_code == 401
    expected = httpx.post(
        f"{api_keyed}/v1/predict", files={"file": ("lot.png", png)}, headers={"X-API-Key": KEY}, timeout=60
    ).json()

    with open_page(browser, api_keyed) as page:  # the page itself is public
        choose(page, "lot.png", png, "image/png")
        page.get_by_role("button", name="Find spaces").click()
        expect(page.get_by_role("alert")).to_contain_text(refused.json()["error"]["message"])
        assert page.evaluate("document.activeElement.id") == "api-key"  # where the fix goes

        page.get_by_label("API key (only if the server asks for one)").fill(KEY)
        with page.expect_request("**/v1/predict") as sent:
            page.get_by_role("button", name="Find spaces").click()
        assert sent.value.headers["x-api-key"] == KEY
        assert_drawn_as_answered(page, expected)
        expect(page.get_by_role("alert")).to_be_hidden()

        stored = page.evaluate("[JSON.stringify(sessionStorage), JSON.stringify(localStorage), document.cookie]")
        assert KEY in stored[0] and KEY not in stored[1] and stored[2] == ""
        page.reload()
        assert page.get_by_label("API key (only if the server asks for one)").input_value() == KEY

    with open_page(browser, api_keyed) as page:  # another session: nothing carried over
        assert page.get_by_label("API key (only if the server asks for one)").input_value() == ""


def test_phone_width_has_no_horizontal_scroll(browser, api_open, shots):
    from playwright.sync_api import expect

    png = encode_png(lot_image(360, 480, seed=3))
    expected = predict_json(api_open, "lot.png", png).json()
    with open_page(browser, api_open, viewport=PHONE, touch=True) as page:
        choose(page, "lot.png", png, "image/png")
        page.get_by_role("button", name="Find spaces").click()
        assert_drawn_as_answered(page, expected)
        # one column: the result was brought into view; a tap on a space shows its confidence
        assert page.locator("#results").bounding_box()["y"] < PHONE["height"] / 2
        space = max(expected["spaces"], key=lambda s: s["area_px"])
        page.locator(f'#overlay polygon[data-id="{space["id"]}"]').tap()
        expect(page.locator("#tooltip")).to_contain_text(f"confidence {space['confidence'] * 100:.1f}%")
        page.get_by_text("Every space with its confidence").click()
        expect(page.locator("#space-rows tr").first).to_be_visible()
        widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1] == PHONE["width"]
        stage = page.locator("#stage").bounding_box()
        assert stage["x"] >= 0 and stage["x"] + stage["width"] <= PHONE["width"]
        button = page.get_by_role("button", name="Find spaces").bounding_box()
        assert button["height"] >= 44  # a finger-sized target
        page.get_by_text("Every space with its confidence").click()
        page.screenshot(path=str(shots / "web-page-phone.png"), full_page=True)


def test_a_geotiff_is_drawn_on_a_blank_canvas_of_its_size(browser, api_open, shots):
    from playwright.sync_api import expect

    tif = geotiff_bytes(lot_image(300, 340, seed=5))
    expected = predict_json(api_open, "site.tif", tif).json()
    assert expected["geojson"] is not None and expected["free_spaces"] > 0
    with open_page(browser, api_open) as page:
        choose(page, "site.tif", tif, "image/tiff")
        page.get_by_role("button", name="Find spaces").click()
        assert_drawn_as_answered(page, expected)
        expect(page.locator("#picture")).to_be_hidden()
        assert "blank" in page.get_attribute("#stage", "class")
        expect(page.locator("#stage-note")).to_contain_text("cannot display site.tif")
        expect(page.locator("#stage-note")).to_contain_text("340 × 300 px")
        box = page.locator("#stage").bounding_box()
        assert box["width"] / box["height"] == pytest.approx(340 / 300, rel=0.02)
        page.screenshot(path=str(shots / "web-page-geotiff.png"))


def test_the_page_is_public_and_leaves_the_api_rules_alone(api_keyed):
    """No browser needed: `/` and its files need no key, /v1 still does, unknown paths keep the 404 JSON."""
    with httpx.Client(base_url=api_keyed, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/app.js"' in page.text
        for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
            r = client.get(asset)
            assert r.status_code == 200 and kind in r.headers["content-type"]
        assert client.get("/v1/model").status_code == 401
        assert client.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200
        for missing in ("/nope", "/static/nope.js", "/static/../serving/app.py"):
            r = client.get(missing)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", missing
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths and "/v1/predict" in paths
