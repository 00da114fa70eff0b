"""The README's picture of the analyses: the dashboard on the run it opens with, in headless
views coloured by the cross-space disagreement, its list of the most disagreeing images, the
most disagreeing one opened large with its saliency overlay, and the co-occurrence matrix.

    python docs/analyses_screenshot.py --data-dir DIR [--out docs/analyses.png]

The dashboard is served by `python app.py` on a free local port for the time of the picture;
the page (disagreement and detail) and, below it, the selection manager on its co-occurrence
tab make one PNG, reduced to --width pixels across and 256 colours. Run it under
`flock /tmp/xrae-browser.lock` where others share the machine's browser.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--no-sandbox", "--disable-dev-shm-usage",
         "--window-size=1600,1250", "--hide-scrollbars")
WAIT_S = 180  # two shared cores: the first disagreement list and saliency map can take a while


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(port: int) -> None:
    """Until the dashboard answers on the port (it imports and builds for a while first)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not answer on port {port} within {WAIT_S} s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options)


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(
        lambda d: condition(d), message=f"waited {WAIT_S} s for {what}")


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def click_tab(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//a[contains(@class,'nav-link')][text()='{label}']").click()


def shot(driver) -> Image.Image:
    return Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")


def disagreement_and_detail(driver) -> Image.Image:
    """Colour by disagreement, open the tab, open its first (most disagreeing) image."""
    css(driver, "#radio-colour-by input[value='disagreement']")[0].click()
    click_tab(driver, "Disagreement")
    wait(driver, lambda d: css(d, "#disagreement-list button.thumb"), "the disagreement list")
    css(driver, "#disagreement-list button.thumb")[0].click()
    wait(driver, lambda d: d.execute_script(
        "const gd = document.querySelector('#graph-detail-image .js-plotly-plot');"
        "return !!(gd && gd.data && gd.data.some(t => (t.name || '').startsWith('saliency')));"),
        "the saliency overlay")
    time.sleep(2)  # let plotly finish drawing before the picture (no event says it has)
    return shot(driver)


def cooccurrence(driver) -> Image.Image:
    """The selection manager alone, on its co-occurrence tab, the whole matrix in sight."""
    click_tab(driver, "Co-occurrence")
    wait(driver, lambda d: css(d, "#cooccurrence-matrix .heatmaplayer, "
                                  "#cooccurrence-matrix .hm"), "the co-occurrence matrix")
    card = css(driver, "#selection-manager")[0]
    driver.execute_script("arguments[0].scrollIntoView(true);", card)
    time.sleep(2)  # the matrix is laid out again at the width it is shown at
    return Image.open(io.BytesIO(card.screenshot_as_png)).convert("RGB")


def compose(page: Image.Image, card: Image.Image, width: int) -> Image.Image:
    """The page above, the co-occurrence card below it on white, reduced to `width` pixels
    across and to 256 colours (a screenshot has few: the file stays small)."""
    sheet = Image.new("RGB", (page.width, page.height + card.height + 16), "white")
    sheet.paste(page, (0, 0))
    sheet.paste(card, ((page.width - card.width) // 2, page.height + 16))
    scale = width / sheet.width
    small = sheet.resize((width, round(sheet.height * scale)), Image.LANCZOS)
    return small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default=str(ROOT / "docs" / "analyses.png"))
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", args.data_dir,
                              "--port", str(port)], cwd=ROOT)
    driver = None
    try:
        wait_for_server(port)
        driver = browser()
        driver.get(f"http://127.0.0.1:{port}/")
        wait(driver, lambda d: "images" in (css(d, "#header-fea") or [None])[0].text
             if css(d, "#header-fea") else False, "the views")
        pictures = [disagreement_and_detail(driver), cooccurrence(driver)]
    except Exception:
        if driver is not None:  # what the page showed when it went wrong
            shot(driver).save(Path(args.out).with_suffix(".failed.png"))
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    compose(*pictures, args.width).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
