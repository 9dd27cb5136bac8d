"""Serves the demo with the bundled models, runs it on one image in headless Chromium at the page's defaults (the
preselected model at its own default steps) and saves a screenshot for the Space README.

    python spaces/hsr-demo/make_screenshot.py

Needs playwright (`pip install playwright`) and a Chromium binary (`/usr/bin/chromium` from Debian's `chromium`
package, or `--chromium PATH`). The image is the first file of `examples/`, or a synthetic scene when there is none.
`app` is imported from this script's folder, which Python puts first on `sys.path` when it runs a script.
"""

import argparse
import socket
import sys
import tempfile
from pathlib import Path

import app


HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="Input image; default: first example or synthetic.")
    parser.add_argument("--output", type=Path, default=HERE / "screenshot.png", help="Where to save the PNG.")
    parser.add_argument(
        "--steps", type=int, default=None, help="DDPM sampling steps; default: the page's (the model's)."
    )
    parser.add_argument("--samples", type=int, default=None, help="DDPM samples (mean ± σ); default: the page's.")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"), help="Chromium executable.")
    return parser.parse_args(argv)


def synthetic_photo(path: Path) -> Path:
    """An sRGB rendering of a smooth synthetic reflectance scene, for when `examples/` is empty."""
    import numpy as np
    import PIL.Image

    from hsr_diffusers.data import make_synthetic_cube
    from hsr_diffusers.spectral import srgb_preview

    cube = make_synthetic_cube(288, 384, num_materials=6, rng=np.random.default_rng(3))
    PIL.Image.fromarray(srgb_preview(cube)).save(path)
    return path


def main(args):
    from playwright.sync_api import sync_playwright

    pipelines = app.load_pipelines()
    for name, pipe in list(pipelines.items()):
        if isinstance(pipe, str):  # a model that failed to load: say why, and leave it out of the screenshot
            print(pipe)
            del pipelines[name]
    if not pipelines:
        sys.exit("No model could be loaded; see the messages above.")
    examples = app.find_examples()
    image = args.image or (Path(examples[0]) if examples else synthetic_photo(Path(tempfile.mkdtemp()) / "scene.png"))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = app.build_demo(pipelines)
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        share=False,
        ssr_mode=False,
        max_file_size=app.MAX_FILE_SIZE,
        quiet=True,
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(args.chromium), args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.set_default_timeout(600_000)
            page.goto(f"http://127.0.0.1:{port}/")
            for elem_id, value in (("steps", args.steps), ("samples", args.samples)):
                field = page.locator(f"#{elem_id} input[type=number]")
                if value is not None and field.is_enabled():
                    field.fill(str(value))
                    field.press("Enter")
            page.set_input_files("#input-image input[type=file]", str(image))
            page.wait_for_selector("#input-image img")
            page.click("#run-button")
            preview = page.locator("#preview img")
            preview.wait_for()
            # Click three pixels of the displayed image (it is letterboxed inside the element's box).
            box = preview.bounding_box()
            natural = preview.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            scale = min(1.0, box["width"] / natural[0], box["height"] / natural[1])
            for fx, fy in ((0.3, 0.4), (0.6, 0.55), (0.75, 0.25)):
                x = box["width"] / 2 + (fx - 0.5) * natural[0] * scale
                y = box["height"] / 2 + (fy - 0.5) * natural[1] * scale
                preview.click(position={"x": x, "y": y})
                page.wait_for_selector("#spectrum-plot img")
                page.wait_for_timeout(500)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"saved {args.output}")


if __name__ == "__main__":
    main(parse_args())
