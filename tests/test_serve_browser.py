"""The search page in headless Chromium (selenium): upload a query, see the ranked thumbnails with
scores, the query's keypoints and a similarity Grad-CAM; a non-image gets the page's message. A
screenshot is kept under runs/serve-browser/ (and pytest's tmp dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.browser_setup import start_chrome
from tests.serve_helpers import build_index_for_tests, image_bytes, serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "serve-browser"


@pytest.fixture(scope="module")
def built(tiny_synth, tmp_path_factory):
    return build_index_for_tests(tmp_path_factory.mktemp("serve_index"), tiny_synth)


@pytest.fixture
def browser(tmp_path):
    driver = start_chrome(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_page_searches_shows_scores_keypoints_explains_and_rejects(built, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    query = tmp_path / "query.png"
    query.write_bytes(image_bytes(built["queries"][1]))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, whatever its name says")

    with serving(built, tmp_path) as server:
        expected = httpx.post(f"{server.url}/api/search?top_k=10", content=query.read_bytes(),
                              timeout=60).json()["results"]
        wait = WebDriverWait(browser, 60)
        browser.get(server.url + "/")
        wait.until(lambda d: "gallery images" in d.find_element(By.ID, "info").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery li img")) > 0)

        browser.find_element(By.ID, "file-input").send_keys(str(query))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == len(expected))
        cards = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
        assert [int(c.get_attribute("data-id")) for c in cards] == [h["id"] for h in expected]
        scores = [c.find_element(By.CLASS_NAME, "score").text for c in cards]
        assert scores == [f"{h['rank']}. {h['score']:.4f}" for h in expected]
        # every thumbnail actually loaded
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        assert browser.find_element(By.ID, "query-box").is_displayed()
        assert "keypoints" in browser.find_element(By.ID, "query-note").text
        # the skeleton in the CLI's colours, at sub-pixel positions, with a legend
        kp = httpx.post(f"{server.url}/api/search?top_k=1", content=query.read_bytes(), timeout=60).json()["keypoints"]
        legend = browser.find_element(By.ID, "query-legend")
        assert legend.is_displayed() and [e.text for e in legend.find_elements(By.CLASS_NAME, "legend-item")] == \
            ["left", "right", "centre"]
        strongest = max(range(len(kp["points"])), key=lambda i: kp["points"][i][2])
        x, y, _ = kp["points"][strongest]
        pixel = browser.execute_script(
            "const c = document.getElementById('query-canvas');"
            "const s = Math.min(3, 256 / arguments[2], 256 / arguments[3]);"
            "return [...c.getContext('2d').getImageData(Math.floor((arguments[0] + 0.5) * s),"
            " Math.floor((arguments[1] + 0.5) * s), 1, 1).data].slice(0, 3);",
            x, y, expected_h := Image.open(query).height, Image.open(query).width)
        assert "#%02x%02x%02x" % tuple(pixel) == kp["colours"][strongest], (pixel, kp["colours"][strongest])
        assert browser.find_element(By.ID, "message").is_displayed() is False

        cards[0].click()
        wait.until(lambda d: (d.find_element(By.ID, "explain-picture").get_attribute("src") or "")
                   .startswith("data:image/png;base64,"))
        assert "cosine similarity" in browser.find_element(By.ID, "explain-caption").text

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 0
        shutil.copy(shot, ARTIFACTS / "page-results.png")

        browser.find_element(By.ID, "file-input").send_keys(str(not_image))
        wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
        message = browser.find_element(By.ID, "message").text
        assert message.startswith("Rejected:") and "JPEG, PNG or WEBP" in message
        assert browser.find_elements(By.CSS_SELECTOR, "#results li.result") == []
        browser.save_screenshot(str(ARTIFACTS / "page-rejected.png"))

        # a gallery image clicked is the next query: it finds itself first
        thumb = browser.find_elements(By.CSS_SELECTOR, "#gallery li.gallery-item")[2]
        picked = int(thumb.get_attribute("data-id"))
        thumb.click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) > 0)
        top = browser.find_elements(By.CSS_SELECTOR, "#results li.result")[0]
        assert int(top.get_attribute("data-id")) == picked
        assert top.find_element(By.CLASS_NAME, "score").text in ("1. 1.0000", "1. 0.9999")
        assert browser.find_element(By.ID, "message").is_displayed() is False

        # re-ranked: the list shows the re-ranked distance it is ordered by, rising down the list
        browser.find_element(By.ID, "rerank").click()
        browser.find_element(By.ID, "file-input").send_keys(str(query))
        reranked = httpx.post(f"{server.url}/api/search?top_k=10&rerank=true", content=query.read_bytes(),
                              timeout=60).json()["results"]
        wait.until(lambda d: [c.find_element(By.CLASS_NAME, "score").text
                              for c in d.find_elements(By.CSS_SELECTOR, "#results li.result")] ==
                   [f"{h['rank']}. d {h['rerank_distance']:.4f}" for h in reranked])
        distances = [h["rerank_distance"] for h in reranked]
        assert distances == sorted(distances)
        browser.find_element(By.ID, "rerank").click()

        # the service is unharmed: the same search gives the same answer
        assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
        again = httpx.post(f"{server.url}/api/search?top_k=10", content=query.read_bytes(), timeout=60)
        assert again.json()["results"] == expected
