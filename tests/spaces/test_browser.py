"""The demo in a real headless browser: Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run`) driven by
playwright, with the tiny pipelines and once with the bundled DDPM at the page's defaults. Skips, with the reason, when
either is missing."""

import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest

from ..testing_utils import slow
from .conftest import BUNDLED_DDPM, CROP_BOX, GAN, SPACE_DIR


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


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#input-image input[type=file]", state="attached")
    return page


@pytest.fixture
def page(browser, served_demo):
    page = open_page(browser, served_demo)
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


def test_bundled_ddpm_at_the_page_defaults(browser, served_bundled_demo, bundled_pipelines, photo_crop):
    """What a visitor of the Space does: upload a photo, reconstruct without touching a setting, click a pixel and
    download the cube, with the model the page preselects (the bundled DDPM)."""
    width, height = CROP_BOX[2] - CROP_BOX[0], CROP_BOX[3] - CROP_BOX[1]
    steps = bundled_pipelines[BUNDLED_DDPM].config.default_num_inference_steps
    page = open_page(browser, served_bundled_demo)
    try:
        assert page.input_value("#model input") == f"DDPM · {BUNDLED_DDPM}"
        assert page.input_value("#steps input[type=number]") == str(steps)
        upload_and_run(page, photo_crop)
        preview = page.locator("#preview img")
        preview.wait_for()
        status = page.inner_text("#status")
        assert f"of a {width}×{height} image with {BUNDLED_DDPM} (DDPM, {steps} steps, 4 sample(s), seed 0)" in status
        for elem_id in ("band-image", "rerendered", "difference", "uncertainty"):
            assert page.locator(f"#{elem_id} img").count() == 1, elem_id

        box = preview.bounding_box()
        preview.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
        page.wait_for_selector("#spectrum-plot img")
        x, y = (int(page.input_value(f"#pixel-{axis} input")) for axis in "xy")
        assert abs(x - width // 2) <= 1 and abs(y - height // 2) <= 1, (x, y)

        page.click("#download-button")
        files = page.locator("#files", has_text="coffee_crop_ddpm-cave")  # the name, then its suffix, in two elements
        files.wait_for()
        assert ".h5" in files.inner_text()
    finally:
        page.close()


@slow
def test_make_screenshot_runs_as_documented(browser, tmp_path):
    """`make_screenshot.py` on its own (bundled models, first example photo, page defaults); about 40 s."""
    output = tmp_path / "screenshot.png"
    subprocess.run(
        [sys.executable, str(SPACE_DIR / "make_screenshot.py"), "--output", str(output)], check=True, timeout=600
    )
    with PIL.Image.open(output) as image:
        assert image.width == 1280 and image.height > 1500
