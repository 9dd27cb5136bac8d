"""The demo in a real headless browser: Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run`) driven by
playwright. Skips, with the reason, when either is missing."""

import time
from pathlib import Path

import pytest

from .conftest import GAN


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run browser tests")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served_demo):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served_demo)
    page.wait_for_selector("#input-image input[type=file]", state="attached")
    yield page
    page.close()


def set_number(page, elem_id: str, value: int):
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def upload_and_run(page, path: Path):
    page.set_input_files("#input-image input[type=file]", str(path))
    page.wait_for_selector("#input-image img")
    page.click("#run-button")


def test_upload_run_click_pixel_shows_spectrum(page, image_files, tmp_path):
    start = time.perf_counter()
    set_number(page, "steps", 2)
    set_number(page, "samples", 2)
    upload_and_run(page, image_files["photo"])
    preview = page.locator("#preview img")
    preview.wait_for()
    assert "Reconstructed 31 bands (400–700 nm) of a 32×24 image" in page.inner_text("#status")
    assert "2 steps, 2 sample(s)" in page.inner_text("#status")
    assert page.locator("#spectrum-plot img").count() == 0

    # Click the centre of the displayed image: the demo gets that pixel in image coordinates.
    box = preview.bounding_box()
    preview.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    page.wait_for_selector("#spectrum-plot img")
    x, y = (int(page.input_value(f"#pixel-{axis} input")) for axis in "xy")
    assert abs(x - 16) <= 1 and abs(y - 12) <= 1, (x, y)
    assert page.locator("#band-image img").count() == 1
    assert page.locator("#difference img").count() == 1

    # The band slider shows one band, labelled with its wavelength.
    set_number(page, "band-slider", 4)
    page.locator("#band-image", has_text="Band 5 of 31: 440 nm").wait_for()

    screenshot = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert time.perf_counter() - start < 15


def test_bad_uploads_show_a_readable_message(page, image_files):
    page.locator("#model input").click()
    page.get_by_role("option", name=f"PixelGAN · {GAN}").click()
    assert page.input_value("#model input") == f"PixelGAN · {GAN}"
    for name, message in (("gray", "The image is grayscale"), ("corrupt", "it is corrupt or not an image file")):
        page.set_input_files("#input-image input[type=file]", str(image_files[name]))
        page.click("#run-button")
        toast = page.locator(".toast-body", has_text=message)
        toast.wait_for()
        assert toast.count() == 1
    assert page.locator("#preview img").count() == 0
