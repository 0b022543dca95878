"""The web page in a real browser: headless Chromium (Debian's) driven by Playwright, keyboard only.

Skipped when /usr/bin/chromium is missing (``apt-get install chromium``; never ``playwright install``).
Set ``CXRLAB_SCREENSHOT=FILE.png`` to keep the screenshot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_fixtures import first_images, trained_run

from cxrlab.serve.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="headless browser test needs /usr/bin/chromium "
                                                               "(apt-get install chromium)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def served_run(tiny_phantom, tmp_path_factory):
    return trained_run(tiny_phantom, tmp_path_factory)


@pytest.fixture(scope="module")
def phantom_images(tiny_phantom):
    return first_images(tiny_phantom)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields the page's URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server_url(served_run):
    with serving(create_app(served_run.path, "auto")) as url:
        yield url


def test_page_predicts_explains_and_warns_with_the_keyboard_alone(server_url, phantom_images, tmp_path):
    from playwright.sync_api import sync_playwright

    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 860})
            page.set_default_timeout(120_000)  # CI machines are slow and shared
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # listen for the picker before anything happens: expect_file_chooser() enables the interception
            # only when entered, and a key press can overtake it (a known Playwright/Chromium race)
            choosers = []
            page.on("filechooser", lambda chooser: choosers.append(chooser))
            page.goto(server_url)
            page.wait_for_selector("#card table")
            assert "served" in page.inner_text("#model-name")
            assert "No patient is in two splits." in page.inner_text("#card")  # the phantom's split is by patient
            # keyboard only: Tab past the skip link to "Choose files...", Enter opens the picker
            page.keyboard.press("Tab")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "pick"
            page.keyboard.press("Enter")
            deadline = time.monotonic() + 120
            while not choosers and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert choosers, "Enter on 'Choose files…' did not open the file picker"
            choosers[0].set_files([str(phantom_images[0]), str(noise)])
            page.wait_for_selector(".result .probs li")
            assert page.locator(".result").count() == 2
            assert page.locator(".result").first.locator(".probs li").count() == 6
            assert page.locator(".result").first.locator(".thr").count() == 6
            page.wait_for_function("[...document.querySelectorAll('img.cam')].every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=120_000)
            assert "overlay for" in page.get_attribute(".result img.cam", "alt")
            assert page.locator(".result").nth(1).locator(".ood").is_visible()  # noise is flagged
            assert "Unlike the training images" in page.locator(".result").nth(1).locator(".ood").inner_text()
            # change the explained label with the keyboard: focus the picker, pick another option
            picker = page.locator(".result").first.locator(".label-picker")
            picker.focus()
            second = picker.locator("option").nth(1).get_attribute("value")
            picker.select_option(second)
            page.wait_for_function(f"document.querySelector('.cam-caption').textContent.includes('for {second} ')")
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000
    if os.environ.get("CXRLAB_SCREENSHOT"):
        shutil.copy(shot, os.environ["CXRLAB_SCREENSHOT"])


def test_binary_page_says_normal_and_the_card_shows_patients_shared_by_train_and_test(tmp_path):
    """A Kermany-layout run (binary, 2 patients in train and test): the page's wording for both."""
    from playwright.sync_api import sync_playwright

    from cxrlab.config import load_config
    from cxrlab.data.phantom_layouts.kermany import write_phantom_kermany
    from cxrlab.data.preprocess import load_image
    from cxrlab.workflows import run_experiment
    from cxrlab.workflows.service import ModelService

    root = write_phantom_kermany(tmp_path / "kermany", n=90, size=48, seed=1, workers=1, shared_patients=2)
    run_experiment(load_config(None, [], base={
        "name": "pneumonia", "seed": 0, "runs_dir": str(tmp_path / "runs"), "task": "binary",
        "data": {"source": "kermany", "root": str(root), "image_size": 32, "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 16}, "evaluate": {"n_boot": 20}, "explain": {"enabled": False}}))
    service = ModelService(tmp_path / "runs" / "pneumonia", "torch")
    assert set(service.patient_overlap) == {"train-test"} and service.patient_overlap["train-test"]["patients"] == 2
    images = sorted((root / "test").rglob("*.jpeg"))
    results = service.predict(np.stack([load_image(p, service.record.preprocess) for p in images]),
                              [p.name for p in images])
    negative = next((p for p, r in zip(images, results, strict=True) if not r["positive"]), None)
    assert negative is not None, "no test image below the threshold: cannot show the negative wording"
    # the API says what predict says (never "none" for a binary negative)
    assert {r["prediction"] for r in results if not r["positive"]} == {"Normal (no Pneumonia)"}
    errors: list[str] = []
    with serving(create_app(service=service)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 860})
            page.set_default_timeout(120_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("#card .leak")
            leak = page.inner_text("#card .leak")
            assert "train and test: 2 patients" in leak and "likely optimistic" in leak
            assert "1 labels" not in page.inner_text("#model-meta") and "Pneumonia" in page.inner_text("#model-meta")
            assert "letterbox" not in page.inner_text("#card") and "squashed" in page.inner_text("#card")  # steps applied
            page.set_input_files("#files", [str(negative)])
            page.wait_for_selector(".result .decision strong")
            decision = page.inner_text(".result .decision")
            assert "Normal (no Pneumonia)" in decision and "No label reaches" not in decision
            page.wait_for_function("[...document.querySelectorAll('img.cam')].every(i => i.complete && i.naturalWidth > 0)")
            shot = tmp_path / "serve_binary.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    if os.environ.get("CXRLAB_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["CXRLAB_SCREENSHOT"]).with_name("serve_binary.png"))
