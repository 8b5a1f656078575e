"""The page in a real browser: Playwright driving Debian's Chromium against the service on a loopback port.

Uploads LIDC-IDRI-0001's zipped series and a BreastMNIST image through the page, checks that the answer and
the overlays appear (in the result and as coloured pixels on the viewer's canvas), uses the slider, the
window presets and the model card from the keyboard and the mouse, sends a file the server refuses, and
saves a screenshot of each state under the test's ``tmp_path``. The browser must load nothing but the
service's own addresses and log no error (a content-security-policy violation would be one).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("MEDLENS_SCREENSHOTS")  # also copy the screenshots there, to look at them


@pytest.fixture()
def page(service, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install the dev extra (playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (scripts/debian-packages.txt)")
    url, _ = service
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1366, "height": 900})
        page = context.new_page()
        page.requests, page.problems = [], []
        page.on("request", lambda request: page.requests.append(request.url))
        page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
        page.on("pageerror", lambda error: page.problems.append(str(error)))
        page.goto(url + "/")
        yield page
        context.close()


def shoot(page, tmp_path: Path, name: str) -> Path:
    path = page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True) and tmp_path / f"{name}.png"
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / path.name)
    return path


def coloured_pixels(page) -> int:
    """Pixels of the viewer's canvas that are not gray (an overlay drawn on a gray image)."""
    return page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - d[i + 1]) > 30 || Math.abs(d[i + 1] - d[i + 2]) > 30) n++;
        }
        return n;
    }""")


def canvas_sum(page) -> int:
    return page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0;
        for (let i = 0; i < d.length; i += 4) s += d[i];
        return s;
    }""")


def send(page, bundle: str, files) -> None:
    """Choose ``bundle``, pick ``files`` and wait for the answer (polling selectors: the page's policy forbids
    the string evaluation of Playwright's ``wait_for_function``)."""
    page.select_option("#bundle", bundle)
    page.evaluate("() => { document.body.dataset.state = 'sending'; }")
    page.set_input_files("#file", files)
    page.wait_for_selector("body[data-state=done], body[data-state=error]", state="attached", timeout=120_000)


def test_page_predicts_a_ct_series_and_an_ultrasound_image(page, service, token, lidc_zip, breast_png, tmp_path):
    url, _ = service
    # the server wants a token: the page asks for it, and lists the models once it has it
    page.wait_for_selector("#token-form:not([hidden])")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Use token").click()
    page.wait_for_selector("#bundle option:nth-child(6)", state="attached")
    shoot(page, tmp_path, "1-start")

    # LIDC-IDRI-0001, zipped: the nodule call, its outline and Grad-CAM in the viewer, a slice slider
    send(page, "nodules", str(lidc_zip))
    assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#error")
    assert page.inner_text("#results [data-testid=label]") == "malignant"
    assert "69.xml nodule 1" in page.inner_text("#results")
    assert page.get_attribute("#canvas", "data-overlays") == "Grad-CAM heat map,segmentation outline"
    assert page.locator("#results img[alt^='Grad-CAM overlay']").count() == 1
    assert page.locator("#results img[alt^='Outline of Lesion 1']").count() == 1
    assert coloured_pixels(page) > 200
    slider = page.get_by_role("slider")
    assert slider.get_attribute("max") == "15"
    lesion_slice = int(slider.input_value())
    shoot(page, tmp_path, "2-lidc-lung-window")
    # keyboard: the slider moves with the arrow keys and says where it is
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert int(slider.input_value()) == lesion_slice + 1
    assert page.inner_text("#slice-label") == f"Slice {lesion_slice + 2} of 16"
    # window presets change the picture; overlays switch off
    lung = canvas_sum(page)
    page.get_by_role("radio", name="Bone").check()
    assert canvas_sum(page) != lung
    page.get_by_role("checkbox", name="Grad-CAM heat map").uncheck()
    page.get_by_role("checkbox", name="Segmentation outline").uncheck()
    assert page.get_attribute("#canvas", "data-overlays") == "" and coloured_pixels(page) == 0
    shoot(page, tmp_path, "3-lidc-bone-window-no-overlay")

    # the model card, one click away, closed with Escape
    page.get_by_role("button", name="Model card").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(state="visible")
    assert "Intended use" in dialog.inner_text()
    shoot(page, tmp_path, "4-model-card")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # a BreastMNIST image: probabilities, threshold, label and the Grad-CAM overlay
    send(page, "breast", str(breast_png))
    assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#error")
    label = page.inner_text("#results [data-testid=label]")
    assert label in ("malignant", "normal, benign")
    text = page.inner_text("#results")
    assert "p(malignant)" in text and "p(normal, benign)" in text and "Threshold 0.50" in text
    assert page.locator("#results meter").count() == 2
    assert page.get_attribute("#canvas", "data-overlays") == ""  # the overlay stays as the user left it
    page.get_by_role("checkbox", name="Grad-CAM heat map").check()
    assert page.get_attribute("#canvas", "data-overlays") == "Grad-CAM heat map" and coloured_pixels(page) > 1000
    assert page.locator("#slice-row").is_hidden() and page.locator("#window-row").is_hidden()
    shoot(page, tmp_path, "5-breast-gradcam")

    # a file the server refuses: a clear message, and the page stays usable
    refused = tmp_path / "notes.txt"
    refused.write_text("this is not an image\n" * 20)
    send(page, "breast", str(refused))
    error = page.get_by_role("alert")
    assert error.is_visible() and error.inner_text().startswith("The file was refused (HTTP 415): notes.txt")
    assert page.inner_text("#results") == "No result: notes.txt was refused."  # the last answer is not left up
    shoot(page, tmp_path, "6-refused")

    # keyboard reach: Tab visits the model selector, the card button and the file button
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    seen = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("document.activeElement.id"))
    assert {"bundle", "card-button", "choose"} <= seen

    assert all(r.startswith(url) or r.startswith("data:") or r.startswith("blob:") for r in page.requests), \
        [r for r in page.requests if not r.startswith(url)]
    expected = "the server responded with a status of 415"  # the refused file, reported by the browser too
    assert [p for p in page.problems if expected not in p] == []
