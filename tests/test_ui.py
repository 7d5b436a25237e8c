"""The page at /ui, served by a real `bentoml serve` and used in a real browser.

The browser is Debian's Chromium (`apt-get install -y --no-install-recommends chromium`) driven
by Playwright; `playwright install` cannot download its own browsers here. Without
/usr/bin/chromium the browser tests are skipped, or fail when the environment variable CI is set.

Every page is loaded with requests to any other origin aborted and recorded, so the page is
proven to work offline, and with uncaught script errors and console errors (such as a Content
Security Policy violation) collected; a test fails on either.

The page adapts to the model that models.json describes: the binary digit model and the 10-class
digit model keep the drawing pad, the document-orientation model (an image classifier that is not
about digits) gets upload, drop, paste and the phone camera; multi-class answers are shown as
ranked bars. Each kind is tested against a real server for its model, and all three behind the
model picker of one server that serves them together.

UPDATE_UI_SCREENSHOT=1 makes the drawn-3 test write docs/ui.png and the orientation upload test
docs/ui-image.png, the screenshots of README.md and docs/ui.md.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    expect,
    sync_playwright,
)

from tests.conftest import (
    DIGITS_10_MODEL,
    FIXTURES,
    MODEL,
    ROOT,
    TEST_API_KEY,
    Server,
    orientation_model_path,
    run_import,
    serving,
)
from tests.documents import document

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
DIGITS = FIXTURES / "digits"
SCREENSHOT = ROOT / "docs" / "ui.png"
IMAGE_SCREENSHOT = ROOT / "docs" / "ui-image.png"
DESKTOP = {"width": 1000, "height": 720}
PHONE = {"width": 390, "height": 844}

Stroke = list[tuple[float, float]]


def arc(centre_x: float, centre_y: float, radius: float, start: float, end: float) -> Stroke:
    """Points along a circular arc, angles in degrees, y pointing down (screen coordinates)."""
    steps = 14
    angles = [math.radians(start + (end - start) * i / (steps - 1)) for i in range(steps)]
    return [(centre_x + radius * math.cos(a), centre_y + radius * math.sin(a)) for a in angles]


# Strokes in pad coordinates (0..1), written the way a person writes them: a 3 in one stroke, its
# upper bowl then its lower bowl, and a 1 as one vertical line.
THREE: list[Stroke] = [arc(0.5, 0.3, 0.18, 200, 430) + arc(0.5, 0.68, 0.2, -90, 150)]
ONE: list[Stroke] = [[(0.52, 0.15), (0.51, 0.5), (0.5, 0.85)]]


# --- the page over plain HTTP (no browser needed) ---------------------------------------------


def test_ui_without_a_slash_redirects_to_the_page(client: httpx.Client) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "ui/"  # relative: never built from the Host header


def test_page_and_assets_are_served_with_their_types_and_a_strict_policy(
    client: httpx.Client,
) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<canvas" in page.text
    # The wording comes from models.json, not from the page's source.
    assert "Is it a 3?" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for asset, content_type in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = client.get(f"/ui/{asset}")
        assert response.status_code == 200
        assert content_type in response.headers["content-type"]
        assert asset in page.text  # the page really loads it


def test_other_methods_on_the_page_get_a_json_405_that_points_to_predict(
    client: httpx.Client,
) -> None:
    response = client.post("/ui/", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert "POST /predict" in response.json()["error"]


def test_a_missing_asset_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/ui/nope.js")
    assert response.status_code == 404
    assert "/ui/nope.js" in response.json()["error"]


# --- the page in Chromium ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    chromium = playwright_driver.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    yield chromium
    chromium.close()


@dataclass
class PageProblems:
    """What went wrong in the page that its visible state would not show."""

    foreign_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # Chromium logs every error answer as "Failed to load resource"; those of the page's own
        # files are caught by on_response, those of the prediction routes are expected where a
        # test sends bad input, and the test checks what the page shows for them.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.script_errors.append(message.text)

    def on_response(self, response: Response) -> None:
        # /predict, or the chosen model's /models/{name}/predict.
        if response.status >= 400 and not urlsplit(response.url).path.endswith("/predict"):
            self.failed_loads.append(f"{response.status} {response.url}")

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def assert_none(self, origin: str) -> None:
        assert self.foreign_requests == [], "the page must not need another origin (offline)"
        # Every request the page made, as the page saw it (data: URLs would not be requests).
        assert self.requests, "no request was recorded"
        assert [url for url in self.requests if origin_of(url) != origin] == []
        assert self.failed_loads == []
        assert self.script_errors == []


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def open_page(
    browser: Browser, server: Server, **context_options: Any
) -> tuple[Page, PageProblems]:
    context = browser.new_context(**context_options)
    problems = PageProblems()

    def only_this_service(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            problems.foreign_requests.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_service)
    page = context.new_page()
    page.on("console", problems.on_console)
    page.on("response", problems.on_response)
    page.on("pageerror", lambda error: problems.script_errors.append(str(error)))
    page.on("request", problems.on_request)
    page.goto(f"{server.url}/ui")
    wait_until_adapted(page)
    return page, problems


def wait_until_adapted(page: Page) -> None:
    """Until the page has read models.json and adapted to the model."""
    expect(page.locator("body")).to_have_attribute("data-input", re.compile("^(digit|image)$"))


@pytest.fixture
def desktop(browser: Browser, server: Server) -> Iterator[Page]:
    page, problems = open_page(browser, server, viewport=DESKTOP, device_scale_factor=2)
    yield page
    page.context.close()
    problems.assert_none(server.url)


def draw_with_mouse(page: Page, strokes: list[Stroke]) -> None:
    box = page.locator("#pad").bounding_box()
    assert box is not None
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point)
        page.mouse.up()


def draw_with_touch(page: Page, strokes: list[Stroke]) -> None:
    """Real touch input through the DevTools protocol (Playwright only has taps)."""
    box = page.locator("#pad").bounding_box()
    assert box is not None
    touch = page.context.new_cdp_session(page)
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        kinds = ["touchStart"] + ["touchMove"] * (len(points) - 1)
        for kind, (x, y) in zip(kinds, points, strict=True):
            finger = {"x": x, "y": y}
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [finger]})
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def distinct_pad_colours(page: Page) -> int:
    return page.evaluate(
        """() => {
            const pad = document.getElementById("pad");
            const data = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
            const colours = new Set();
            for (let i = 0; i < data.length; i += 4) colours.add(data.slice(i, i + 4).join());
            return colours.size;
        }"""
    )


def shown_proba(page: Page) -> float:
    """The API's exact proba behind the rounded figure on screen, once an answer is shown."""
    expect(page.get_by_test_id("label")).to_be_visible()
    return float(page.get_by_test_id("proba").get_attribute("data-value") or "nan")


def api_answer(client: httpx.Client, name: str, content: bytes) -> dict[str, object]:
    return client.post("/predict", files={"file": (name, content)}).json()


def test_a_drawn_3_is_labelled_3(desktop: Page) -> None:
    draw_with_mouse(desktop, THREE)
    expect(desktop.get_by_test_id("label")).to_have_text("3")
    assert shown_proba(desktop) > 0.5
    expect(desktop.locator("#source")).to_have_text("Sent: your drawing")
    if os.environ.get("UPDATE_UI_SCREENSHOT"):
        desktop.screenshot(path=SCREENSHOT, full_page=True)


def test_a_drawn_1_is_labelled_no_3(desktop: Page) -> None:
    draw_with_mouse(desktop, ONE)
    expect(desktop.get_by_test_id("label")).to_have_text("no 3")
    assert shown_proba(desktop) < 0.5


def test_an_uploaded_digit_gets_the_answer_the_api_gives_for_that_file(
    desktop: Page, client: httpx.Client
) -> None:
    digit = DIGITS / "test0300_digit3.png"
    expected = api_answer(client, digit.name, digit.read_bytes())
    with desktop.expect_file_chooser() as chooser:
        desktop.get_by_role("button", name="Upload an image…").click()
    chooser.value.set_files(digit)
    expect(desktop.get_by_test_id("label")).to_have_text(str(expected["label"]))
    # The exact figure: the page sends the file itself, not a re-drawn copy of it.
    assert shown_proba(desktop) == expected["proba"]
    expect(desktop.locator("#source")).to_contain_text(digit.name)


def test_a_dropped_digit_is_classified(desktop: Page, client: httpx.Client) -> None:
    digit = DIGITS / "test0000_digit0.png"
    expected = api_answer(client, digit.name, digit.read_bytes())
    dropped = desktop.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            return transfer;
        }""",
        [digit.name, list(digit.read_bytes())],
    )
    desktop.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    expect(desktop.get_by_test_id("label")).to_have_text(str(expected["label"]))
    assert shown_proba(desktop) == expected["proba"]


def test_a_non_image_shows_the_api_error(desktop: Page, client: httpx.Client) -> None:
    notes = b"shopping list: eggs\n"
    expected = client.post("/predict", files={"file": ("notes.txt", notes)})
    assert expected.status_code == 400
    desktop.locator("#file").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": notes}
    )
    alert = desktop.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(desktop.get_by_test_id("error")).to_have_text(expected.json()["error"])
    expect(alert).to_contain_text("400")
    expect(desktop.get_by_test_id("label")).to_be_hidden()


def test_without_models_json_the_page_still_classifies_uploads(
    desktop: Page, client: httpx.Client
) -> None:
    # E.g. an older server behind the same page: uploads go to the default model's /predict, and
    # the answer's own shape says how to show it.
    desktop.route("**/ui/models.json", lambda route: route.abort("connectionrefused"))
    desktop.reload()
    expect(desktop.locator("body")).to_have_attribute("data-input", "image")
    expect(desktop.get_by_role("alert")).to_contain_text("description could not be read")
    digit = DIGITS / "test0300_digit3.png"
    expected = api_answer(client, digit.name, digit.read_bytes())
    desktop.locator("#file").set_input_files(digit)
    expect(desktop.get_by_test_id("label")).to_have_text(str(expected["label"]))
    assert shown_proba(desktop) == expected["proba"]


def test_an_unreachable_service_is_said_plainly(desktop: Page) -> None:
    desktop.route("**/predict", lambda route: route.abort("connectionrefused"))
    draw_with_mouse(desktop, ONE)
    expect(desktop.get_by_role("alert")).to_contain_text("could not be reached")


def test_clear_from_the_keyboard_empties_the_pad_and_the_answer(desktop: Page) -> None:
    draw_with_mouse(desktop, THREE)
    expect(desktop.get_by_test_id("label")).to_have_text("3")
    assert distinct_pad_colours(desktop) > 1
    # The first Tab reaches the Clear button, which shows a visible focus ring.
    desktop.keyboard.press("Tab")
    clear = desktop.get_by_role("button", name="Clear")
    expect(clear).to_be_focused()
    assert clear.evaluate("button => getComputedStyle(button).outlineStyle") == "solid"
    desktop.keyboard.press("Enter")
    expect(desktop.get_by_test_id("label")).to_be_hidden()
    expect(desktop.get_by_text("Nothing to classify yet.")).to_be_visible()
    expect(desktop.locator("#source")).to_have_text("")
    assert distinct_pad_colours(desktop) == 1


def test_a_3_drawn_by_finger_on_a_phone_is_labelled_3(browser: Browser, server: Server) -> None:
    page, problems = open_page(
        browser,
        server,
        viewport=PHONE,
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    try:
        # The layout fits the phone: no sideways scrolling, the whole pad on screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        box = page.locator("#pad").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        draw_with_touch(page, THREE)
        expect(page.get_by_test_id("label")).to_have_text("3")
    finally:
        page.context.close()
    problems.assert_none(server.url)


def test_a_3_drawn_in_dark_mode_is_labelled_3(browser: Browser, server: Server) -> None:
    # Light ink on a dark pad: the image sent has the opposite polarity of the light theme's.
    page, problems = open_page(browser, server, viewport=DESKTOP, color_scheme="dark")
    try:
        draw_with_mouse(page, THREE)
        expect(page.get_by_test_id("label")).to_have_text("3")
    finally:
        page.context.close()
    problems.assert_none(server.url)


# --- the page in front of an API key (API_KEY set on the server) --------------------------------

API_KEY = TEST_API_KEY


def test_the_page_asks_for_the_api_key_and_keeps_it_for_the_tab(
    browser: Browser, keyed_server: Server
) -> None:
    page, problems = open_page(browser, keyed_server, viewport=DESKTOP)
    try:
        draw_with_mouse(page, THREE)
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("needs an API key")
        key_field = page.get_by_label("API key", exact=True)
        expect(key_field).to_be_focused()
        assert key_field.get_attribute("type") == "password"

        key_field.fill("not-the-key")
        key_field.press("Enter")
        expect(alert).to_contain_text("The API key was refused")
        expect(key_field).to_be_focused()

        key_field.fill(API_KEY)
        page.get_by_role("button", name="Use key").click()
        # The drawing is sent again with the key, and answered.
        expect(page.get_by_test_id("label")).to_have_text("3")
        expect(alert).to_be_hidden()
        expect(page.locator("#key-form")).to_be_hidden()

        # After a reload the tab still has the key: the next drawing is answered at once.
        page.reload()
        wait_until_adapted(page)
        with page.expect_request("**/predict") as sent:
            draw_with_mouse(page, ONE)
        assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"
        expect(page.get_by_test_id("label")).to_have_text("no 3")
    finally:
        page.context.close()
    problems.assert_none(keyed_server.url)


# --- the page adapts to the model: digits_10 and the document-orientation model -----------------


def model_description(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/ui/model.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def expected_heading(model: dict[str, Any]) -> str:
    """The page's heading: the question for a binary model, else the model's name in words."""
    if model["binary"]:
        negative, positive = model["labels"]
        return f"Is it “{positive}” or “{negative}”?"
    words = re.sub(r"[_-]+", " ", model["name"]).strip()
    return words[0].upper() + words[1:]


def replay(server: Server, request: Request) -> dict[str, Any]:
    """What the API answers for the very request the page made (same URL, body and type)."""
    response = httpx.post(
        request.url,
        content=request.post_data_buffer,
        headers={"content-type": request.headers["content-type"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def shown_bars(page: Page) -> list[tuple[str, float]]:
    """The ranked bars on screen, best first: (label, the API's exact proba)."""
    bars = page.get_by_test_id("bar")
    expect(bars.first).to_be_visible()
    return [
        (bar.get_attribute("data-label") or "", float(bar.get_attribute("data-value") or "nan"))
        for bar in bars.all()
    ]


def assert_bars_are_the_answer(page: Page, answer: dict[str, Any]) -> None:
    ranked = [(entry["label"], entry["proba"]) for entry in answer["top_k"]]
    assert shown_bars(page) == ranked
    expect(page.get_by_test_id("label")).to_have_text(answer["label"])
    # Each bar says its label and percentage in text, not by its length alone.
    items = page.get_by_role("list", name=re.compile("^Best")).get_by_role("listitem")
    expect(items).to_have_count(len(ranked))
    for item, (label, proba) in zip(items.all(), ranked, strict=True):
        expect(item).to_have_text(f"{label}: {percent(proba)}")


def percent(proba: float) -> str:
    """The page's rounding of a probability (app.js)."""
    if 0 < proba < 0.001:
        return "< 0.1 %"
    if 0.999 < proba < 1:
        return "> 99.9 %"
    return f"{proba * 100:.1f} %"


@pytest.fixture
def digits10_page(browser: Browser, digits10_server: Server) -> Iterator[Page]:
    page, problems = open_page(browser, digits10_server, viewport=DESKTOP)
    yield page
    page.context.close()
    problems.assert_none(digits10_server.url)


@pytest.fixture
def orientation_page(browser: Browser, orientation_server: Server) -> Iterator[Page]:
    page, problems = open_page(browser, orientation_server, viewport=DESKTOP, device_scale_factor=2)
    yield page
    page.context.close()
    problems.assert_none(orientation_server.url)


@pytest.mark.parametrize("server_name", ["server", "digits10_server", "orientation_server"])
def test_title_and_heading_come_from_model_json(
    browser: Browser, request: pytest.FixtureRequest, server_name: str
) -> None:
    running: Server = request.getfixturevalue(server_name)
    model = model_description(running)
    page, problems = open_page(browser, running, viewport=DESKTOP)
    try:
        heading = expected_heading(model)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        expect(page).to_have_title(f"{heading} · {model['name']} · dlops")
        expect(page.get_by_test_id("model-tag")).to_contain_text(model["name"])
        lead = page.locator("#lead")
        for label in model["labels"][:10]:
            expect(lead).to_contain_text(label)
        expect(page.locator("body")).to_have_attribute(
            "data-input", "digit" if model["input"] == "digit" else "image"
        )
    finally:
        page.context.close()
    problems.assert_none(running.url)


def test_a_digit_drawn_for_the_10_class_model_gets_ranked_bars(
    digits10_page: Page, digits10_server: Server
) -> None:
    model = model_description(digits10_server)
    assert model["input"] == "digit" and not model["binary"]
    expect(digits10_page.get_by_role("img", name=re.compile("^Drawing pad"))).to_be_visible()
    with digits10_page.expect_request("**/predict?*") as sent:
        draw_with_mouse(digits10_page, THREE)
    assert sent.value.url.endswith(f"/predict?top_k={min(model['top_k'], 10)}")
    expect(digits10_page.get_by_test_id("label")).to_have_text("3")
    bars = shown_bars(digits10_page)
    assert len(bars) == min(model["top_k"], 10)
    assert bars[0][0] == "3"
    probas = [proba for _, proba in bars]
    assert probas == sorted(probas, reverse=True)
    # Exactly what the API answers for the PNG the page sent.
    assert_bars_are_the_answer(digits10_page, replay(digits10_server, sent.value))
    # No binary "probability of" line for a multi-class answer.
    expect(digits10_page.get_by_test_id("proba")).to_be_hidden()


def test_the_orientation_page_classifies_an_uploaded_document(
    orientation_page: Page, orientation_server: Server
) -> None:
    page = orientation_page
    model = model_description(orientation_server)
    assert model["input"] == "image" and not model["binary"]
    # No drawing pad: an image preview and its buttons instead.
    expect(page.locator("#pad")).to_be_hidden()
    expect(page.get_by_role("img", name=re.compile("^Drawing pad"))).to_have_count(0)
    expect(page.get_by_role("img", name="The chosen image")).to_be_visible()
    expect(page.get_by_text("Your image", exact=True)).to_be_visible()

    scan = document(12, 90, "JPEG")  # a portrait page of text, turned 90° clockwise
    with page.expect_request("**/predict?*") as sent:
        # The keyboard gets to the upload first. The chooser is opened with a click: opened with
        # Enter, it never appeared when this test ran after the file's other pages (not alone).
        page.keyboard.press("Tab")
        upload = page.get_by_role("button", name="Upload an image…")
        expect(upload).to_be_focused()
        with page.expect_file_chooser() as chooser:
            upload.click()
        chooser.value.set_files({"name": "scan.jpg", "mimeType": "image/jpeg", "buffer": scan})
    request = sent.value
    # The original file is sent, not a re-encoded preview.
    assert request.post_data_buffer is not None and scan in request.post_data_buffer
    expected = httpx.post(
        request.url, files={"file": ("scan.jpg", scan, "image/jpeg")}, timeout=30
    ).json()
    top = min(model["top_k"], len(model["labels"]))
    assert len(expected["top_k"]) == top
    expect(page.get_by_test_id("label")).to_have_text(expected["label"])
    assert shown_bars(page)[0][0] == expected["label"]
    assert_bars_are_the_answer(page, expected)
    expect(page.locator("#source")).to_contain_text("scan.jpg")
    # The preview shows the picture (more than the paper's one colour).
    assert distinct_colours(page, "preview") > 1
    if os.environ.get("UPDATE_UI_SCREENSHOT"):
        page.evaluate("document.activeElement.blur()")  # no focus ring in the screenshot
        page.screenshot(path=IMAGE_SCREENSHOT, full_page=True)

    page.get_by_role("button", name="Clear").click()
    expect(page.get_by_text("Nothing to classify yet.")).to_be_visible()
    assert distinct_colours(page, "preview") == 1


def distinct_colours(page: Page, canvas_id: str) -> int:
    return page.evaluate(
        """(id) => {
            const canvas = document.getElementById(id);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height)
                .data;
            const colours = new Set();
            for (let i = 0; i < data.length; i += 4) colours.add(data.slice(i, i + 4).join());
            return colours.size;
        }""",
        canvas_id,
    )


def test_a_pasted_image_is_classified(orientation_page: Page, orientation_server: Server) -> None:
    scan = document(11, 180, "PNG")
    with orientation_page.expect_request("**/predict?*") as sent:
        # What Ctrl+V of a copied image delivers: a paste event carrying the image as a file.
        orientation_page.evaluate(
            """(bytes) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], "image.png",
                                            {type: "image/png"}));
                document.body.dispatchEvent(new ClipboardEvent("paste", {
                    clipboardData: transfer, bubbles: true, cancelable: true}));
            }""",
            list(scan),
        )
    assert sent.value.post_data_buffer is not None and scan in sent.value.post_data_buffer
    expected = httpx.post(sent.value.url, files={"file": ("image.png", scan)}, timeout=30).json()
    assert_bars_are_the_answer(orientation_page, expected)
    expect(orientation_page.locator("#source")).to_contain_text("pasted image")


def test_pasted_text_is_left_to_the_page(orientation_page: Page) -> None:
    orientation_page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.setData("text/plain", "not an image");
            document.body.dispatchEvent(new ClipboardEvent("paste", {
                clipboardData: transfer, bubbles: true, cancelable: true}));
        }"""
    )
    expect(orientation_page.get_by_text("Nothing to classify yet.")).to_be_visible()


def test_a_document_dropped_on_the_orientation_page_is_classified(
    orientation_page: Page, orientation_server: Server
) -> None:
    scan = document(3, 270, "JPEG")
    dropped = orientation_page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "page.jpg", {type: "image/jpeg"}));
            return transfer;
        }""",
        list(scan),
    )
    with orientation_page.expect_request("**/predict?*") as sent:
        orientation_page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    expected = httpx.post(sent.value.url, files={"file": ("page.jpg", scan)}, timeout=30).json()
    assert_bars_are_the_answer(orientation_page, expected)


def test_a_phone_gets_the_camera_for_the_orientation_model(
    browser: Browser, orientation_server: Server
) -> None:
    page, problems = open_page(
        browser,
        orientation_server,
        viewport=PHONE,
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    try:
        camera = page.locator("#camera")
        assert camera.get_attribute("type") == "file"
        assert camera.get_attribute("accept") == "image/*"
        assert camera.get_attribute("capture") == "environment"
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        photo = document(5, 0, "JPEG", photo=True)
        with page.expect_request("**/predict?*") as sent:
            with page.expect_file_chooser() as chooser:
                page.get_by_role("button", name="Take a photo…").tap()
            # The chooser is the camera input's: the one with capture set.
            assert chooser.value.element.get_attribute("id") == "camera"
            chooser.value.set_files(
                {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo}
            )
        expected = httpx.post(sent.value.url, files={"file": ("photo.jpg", photo)}, timeout=30)
        assert_bars_are_the_answer(page, expected.json())
    finally:
        page.context.close()
    problems.assert_none(orientation_server.url)


def test_the_camera_button_is_left_out_on_a_desktop(orientation_page: Page) -> None:
    # With a mouse, capture is ignored and the button would be a second "Upload".
    assert orientation_page.locator("#camera").get_attribute("capture") == "environment"
    expect(orientation_page.get_by_role("button", name="Take a photo…")).to_be_hidden()
    expect(orientation_page.get_by_role("button", name="Upload an image…")).to_be_visible()


def test_a_non_image_on_the_orientation_page_shows_the_api_error(
    orientation_page: Page, orientation_server: Server
) -> None:
    notes = b"shopping list: eggs\n"
    expected = httpx.post(
        f"{orientation_server.url}/predict", files={"file": ("notes.txt", notes)}, timeout=30
    )
    assert expected.status_code == 400
    orientation_page.locator("#file").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": notes}
    )
    expect(orientation_page.get_by_test_id("error")).to_have_text(expected.json()["error"])
    expect(orientation_page.get_by_test_id("bars")).to_be_hidden()


def test_a_multi_label_answer_lists_the_labels_found_above_the_bars(
    browser: Browser, tagger: tuple[Server, Any]
) -> None:
    server, _ = tagger
    page, problems = open_page(browser, server, viewport=DESKTOP)
    try:
        picture = io.BytesIO()
        Image.new("RGB", (400, 150), (250, 20, 20)).save(picture, "PNG")
        with page.expect_request("**/predict?*") as sent:
            with page.expect_file_chooser() as chooser:
                page.get_by_role("button", name="Upload an image…").click()
            chooser.value.set_files(
                {"name": "red.png", "mimeType": "image/png", "buffer": picture.getvalue()}
            )
        answer = replay(server, sent.value)
        found = ", ".join(entry["label"] for entry in answer["labels"])
        expect(page.get_by_test_id("label")).to_have_text(
            found or f"none at or above {percent(answer['threshold'])}"
        )
        expect(page.locator("#label-name")).to_have_text("Labels")
        assert shown_bars(page) == [(entry["label"], entry["proba"]) for entry in answer["top_k"]]
        expect(page.get_by_test_id("proba")).to_be_hidden()
    finally:
        page.context.close()
    problems.assert_none(server.url)


# --- several models in one server: the model picker -------------------------------------------

MULTI_MODELS = ("binary_classifier_3", "digits_10", "orientation")
MULTI_OPTIONS = ["binary_classifier_3 (default)", "digits_10", "orientation"]


@pytest.fixture(scope="module")
def multi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The three models in one server, the binary digit model first (the default), with the
    repository extension on, so that a test can unload a model while the page is open."""
    home = tmp_path_factory.mktemp("multi_home")
    paths = (MODEL, DIGITS_10_MODEL, orientation_model_path())
    for path, name in zip(paths, MULTI_MODELS, strict=True):
        imported = run_import(home, str(path), "--name", name)
        assert imported.returncode == 0, imported.stderr
    log = tmp_path_factory.mktemp("multi") / "serve.log"
    env = {"DLOPS_MODELS": ",".join(MULTI_MODELS), "DLOPS_REPOSITORY_API": "1"}
    yield from serving(Server(home, log, **env))


@pytest.fixture
def multi_page(browser: Browser, multi_server: Server) -> Iterator[Page]:
    page, problems = open_page(browser, multi_server, viewport=DESKTOP)
    yield page
    page.context.close()
    problems.assert_none(multi_server.url)


def model_picker(page: Page) -> Locator:
    return page.get_by_role("combobox", name="Model")


def visible_buttons(page: Page) -> list[str]:
    """The input panel's buttons on screen, in the keyboard's order."""
    return [button.inner_text() for button in page.locator("#actions button:visible").all()]


def test_models_json_is_get_models_with_what_the_page_needs(multi_server: Server) -> None:
    listed = httpx.get(f"{multi_server.url}/ui/models.json", timeout=30).json()
    served = httpx.get(f"{multi_server.url}/models", timeout=30).json()
    assert listed["default"] == served["default"] == MULTI_MODELS[0]
    assert [entry["name"] for entry in listed["models"]] == list(MULTI_MODELS)
    extras = [{key: entry.pop(key) for key in ("threshold", "top_k")} for entry in listed["models"]]
    assert listed["models"] == served["models"]
    assert extras == [
        {"threshold": 0.5, "top_k": 1},
        {"threshold": None, "top_k": 5},
        {"threshold": None, "top_k": 4},
    ]
    # model.json still describes the default model alone, in its own shape.
    default = httpx.get(f"{multi_server.url}/ui/model.json", timeout=30).json()
    first = listed["models"][0]
    assert (default["name"], default["version"]) == (first["name"], first["version"])
    assert default["binary"] and default["input"] == "digit" and default["labels"] == ["no 3", "3"]


def test_with_an_api_key_the_pages_models_json_stays_open(keyed_server: Server) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as anonymous:
        assert anonymous.get("/models").status_code == 401
        listed = anonymous.get("/ui/models.json")
    assert listed.status_code == 200
    assert [entry["name"] for entry in listed.json()["models"]] == ["binary_classifier_3"]


def test_the_picker_lists_every_model_and_starts_on_the_default(multi_page: Page) -> None:
    picker = model_picker(multi_page)
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_text(MULTI_OPTIONS)
    expect(picker).to_have_value("binary_classifier_3")
    expect(multi_page.get_by_role("heading", level=1)).to_have_text("Is it “3” or “no 3”?")
    expect(multi_page.get_by_test_id("model-tag")).to_contain_text("binary_classifier_3")
    expect(multi_page.locator("body")).to_have_attribute("data-input", "digit")
    # The picker comes first for the keyboard: the choice decides what the rest of the page is.
    multi_page.keyboard.press("Tab")
    expect(picker).to_be_focused()


def test_the_10_class_model_chosen_answers_a_drawn_3_on_its_own_route(
    multi_page: Page, multi_server: Server
) -> None:
    page = multi_page
    model_picker(page).select_option("digits_10")
    expect(page.get_by_role("heading", level=1)).to_have_text("Digits 10")
    expect(page).to_have_title("Digits 10 · digits_10 · dlops")
    expect(page.locator("#endpoint")).to_have_text("POST /models/digits_10/predict?top_k=5")
    expect(page.get_by_role("img", name=re.compile("^Drawing pad"))).to_be_visible()
    with page.expect_request("**/predict?*") as sent:
        draw_with_mouse(page, THREE)
    assert urlsplit(sent.value.url).path == "/models/digits_10/predict"
    expect(page.get_by_test_id("label")).to_have_text("3")
    answer = replay(multi_server, sent.value)
    assert len(answer["top_k"]) == 5 and answer["top_k"][0]["label"] == "3"
    assert_bars_are_the_answer(page, answer)
    expect(page.get_by_test_id("proba")).to_be_hidden()


def test_choosing_the_binary_model_again_clears_the_answer_and_answers_as_binary(
    multi_page: Page, multi_server: Server
) -> None:
    page = multi_page
    model_picker(page).select_option("digits_10")
    draw_with_mouse(page, THREE)
    expect(page.get_by_test_id("bars")).to_be_visible()

    model_picker(page).select_option("binary_classifier_3")
    expect(page.get_by_text("Nothing to classify yet.")).to_be_visible()
    expect(page.get_by_test_id("label")).to_be_hidden()
    expect(page.locator("#source")).to_have_text("")
    assert distinct_pad_colours(page) == 1
    expect(page.get_by_role("heading", level=1)).to_have_text("Is it “3” or “no 3”?")

    digit = DIGITS / "test0300_digit3.png"
    with page.expect_request("**/predict") as sent:
        page.locator("#file").set_input_files(digit)
    assert sent.value.url == f"{multi_server.url}/models/binary_classifier_3/predict"
    upload = {"file": (digit.name, digit.read_bytes())}
    answer = httpx.post(sent.value.url, files=upload, timeout=30).json()
    expect(page.get_by_test_id("label")).to_have_text(answer["label"])
    assert shown_proba(page) == answer["proba"]
    expect(page.get_by_test_id("bars")).to_be_hidden()
    # The default model's own route, /predict, gives the same answer.
    assert httpx.post(f"{multi_server.url}/predict", files=upload, timeout=30).json() == answer


def test_switching_between_a_digit_and_an_image_model_adapts_the_page_each_time(
    multi_page: Page, multi_server: Server
) -> None:
    page = multi_page
    draw_with_mouse(page, THREE)
    expect(page.get_by_test_id("label")).to_have_text("3")

    model_picker(page).select_option("orientation")
    expect(page.locator("body")).to_have_attribute("data-input", "image")
    expect(page.get_by_text("Nothing to classify yet.")).to_be_visible()
    expect(page.locator("#pad")).to_be_hidden()
    expect(page.get_by_role("img", name="The chosen image")).to_be_visible()
    expect(page.get_by_text("Your image", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Orientation")
    assert visible_buttons(page) == ["Upload an image…", "Clear"]
    scan = document(12, 90, "JPEG")
    with page.expect_request("**/predict?*") as sent:
        page.locator("#file").set_input_files(
            {"name": "scan.jpg", "mimeType": "image/jpeg", "buffer": scan}
        )
    assert urlsplit(sent.value.url).path == "/models/orientation/predict"
    assert_bars_are_the_answer(page, replay(multi_server, sent.value))
    assert distinct_colours(page, "preview") > 1

    model_picker(page).select_option("digits_10")
    expect(page.locator("body")).to_have_attribute("data-input", "digit")
    expect(page.get_by_text("Nothing to classify yet.")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^Drawing pad"))).to_be_visible()
    expect(page.get_by_text("Your digit", exact=True)).to_be_visible()
    assert visible_buttons(page) == ["Clear", "Upload an image…"]
    assert distinct_pad_colours(page) == 1
    draw_with_mouse(page, THREE)
    expect(page.get_by_test_id("label")).to_have_text("3")


def test_a_one_model_server_shows_no_picker(desktop: Page) -> None:
    expect(desktop.locator("#picker")).to_be_hidden()
    expect(model_picker(desktop)).to_have_count(0)
    with desktop.expect_request("**/predict") as sent:
        draw_with_mouse(desktop, THREE)
    assert urlsplit(sent.value.url).path == "/models/binary_classifier_3/predict"
    expect(desktop.get_by_test_id("label")).to_have_text("3")


def test_under_a_path_prefix_the_page_posts_below_the_prefix(
    browser: Browser, multi_server: Server
) -> None:
    # What a proxy that serves the service under /behind/ does: strip the prefix.
    page, problems = open_page(browser, multi_server, viewport=DESKTOP)
    try:
        page.route(
            f"{multi_server.url}/behind/**",
            lambda route: route.continue_(url=route.request.url.replace("/behind/", "/", 1)),
        )
        page.goto(f"{multi_server.url}/behind/ui/")
        wait_until_adapted(page)
        model_picker(page).select_option("digits_10")
        with page.expect_request("**/predict?*") as sent:
            draw_with_mouse(page, THREE)
        assert urlsplit(sent.value.url).path == "/behind/models/digits_10/predict"
        expect(page.get_by_test_id("label")).to_have_text("3")
    finally:
        page.context.close()
    problems.assert_none(multi_server.url)


def test_a_model_unloaded_while_the_page_is_open_leaves_the_picker(
    multi_page: Page, multi_server: Server
) -> None:
    page = multi_page
    model_picker(page).select_option("orientation")
    expect(page.locator("body")).to_have_attribute("data-input", "image")
    repository = f"{multi_server.url}/v2/repository/models/orientation"
    unloaded = httpx.post(f"{repository}/unload", timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    try:
        page.locator("#file").set_input_files(
            {"name": "scan.jpg", "mimeType": "image/jpeg", "buffer": document(3, 0, "JPEG")}
        )
        # The 404 made the page read the list again: back on the default, saying why.
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("The model orientation is no longer served")
        expect(alert).to_contain_text("'orientation' is not loaded")
        expect(alert).to_contain_text("The page now uses binary_classifier_3.")
        expect(model_picker(page).locator("option")).to_have_text(MULTI_OPTIONS[:2])
        expect(model_picker(page)).to_have_value("binary_classifier_3")
        expect(page.locator("body")).to_have_attribute("data-input", "digit")
    finally:
        loaded = httpx.post(f"{repository}/load", timeout=300)
        assert loaded.status_code == 200, loaded.text
