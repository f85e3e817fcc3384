"""The demo page (app/static/index.html) in a real browser against a real server.

Headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) opens `GET /` of a uvicorn
subprocess serving `app.main:app` in embedded mode (no REDIS_URL) with tiny checkpoints made here and an API key
configured, and does what a visitor does: enters the key (kept in localStorage across a reload), generates
speech (an <audio> source and a drawn waveform) and handwriting (an inline SVG; text in a named style, the style
picker showing only for a text model with styles), uploads a WAV to score (numbers appear) and to the latent
analysis (a PNG appears), and sees an API error inline. A full-page screenshot is saved
to $ARTIFACT_DIR (or the test's tmp folder) as demo-page.png.

Skipped, with the reason, when Chromium, chromedriver or Selenium is missing (`apt-get install chromium
chromium-driver`; `pip install selenium`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from apikit import child_env, wav, write_checkpoint, write_tiny_styles
from servicekit import ROOT, free_port, start, stop, wait_until
from tinyckpt import write_tiny_text_checkpoint

from model.wordlm import count_lines, write_wordlm

PAGE = ROOT / "app" / "static" / "index.html"
# Debian's by default; CHROMIUM / CHROMEDRIVER name others. Missing: the browser tests skip, or under CI fail (cikit).
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
API_KEY = "page-test-key"
SERVER_START_S = 90
# The lines text-plain's word model is made of (its made-up lines' words).
MADE_UP_FROM = ["hello world", "a red door", "old bread"]
# The styles shipped beside the tiny text checkpoint (hand-text); text-plain is a text model without styles.
STYLE_TEXTS = {"w001": "hello world", "w002": "abc"}
# Records each handwriting request the page makes and the text of its answer (the page calls the global fetch).
RECORD_FETCH = """
window.hwRequests = [];
const original = window.fetch;
window.fetch = function (url, init) {
  const answer = original.apply(this, arguments);
  if (String(url).includes("generate/handwriting")) {
    const record = { body: init && init.body };
    window.hwRequests.push(record);
    answer.then((r) => r.clone().text()).then((t) => { record.answer = t; }, (e) => { record.answer = "ERR " + e; });
  }
  return answer;
};
"""
WAIT_S = 60

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the browser tests skip and say why
    webdriver = None


def _browser_missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return (
            f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install chromium chromium-driver"
        )
    if webdriver is None:
        return "needs selenium: pip install 'selenium>=4.20,<5'"
    return None


# The server ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("page")
    ckpts = d / "checkpoints"
    ckpts.mkdir()
    write_checkpoint(ckpts / "speech-tiny.safetensors", "speech")
    write_checkpoint(ckpts / "hand-tiny.safetensors", "handwriting")
    write_tiny_text_checkpoint(ckpts / "hand-text.safetensors")  # writes " abcdehlorw"
    write_tiny_styles(ckpts / "hand-text.safetensors", STYLE_TEXTS)
    plain = write_tiny_text_checkpoint(ckpts / "text-plain.safetensors", seed=1)  # a text model without styles ...
    write_wordlm(plain, count_lines(MADE_UP_FROM))  # ... that makes its lines up when it gets no text
    bad = d / "not-audio.wav"
    bad.write_bytes(b"this is not a WAV file\n" * 10)
    (d / "tone.wav").write_bytes(wav(0.5))
    return {"dir": d, "checkpoints": ckpts, "wav": d / "tone.wav", "bad": bad}


@contextlib.contextmanager
def _serve(files: dict[str, Path], name: str, **settings: str):
    """`uvicorn app.main:app` in embedded mode on a free port -> its base URL; stopped on exit."""
    port = free_port()
    env = child_env(CHECKPOINT_DIR=str(files["checkpoints"]), API_KEYS=API_KEY, EMBEDDED_WORKERS="1", **settings)
    log = files["dir"] / f"{name}.log"
    proc = start(["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:  # uvicorn answers only once the app's startup (loading the checkpoints) is done
        wait_until(base + "/healthz", proc, log, SERVER_START_S)
        yield base
    finally:
        stop(proc, timeout=15)


@pytest.fixture(scope="module")
def server(files):
    with _serve(files, "server") as base:
        yield base


# The browser -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    profile = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--mute-audio",
        "--window-size=1280,1000",
        f"--user-data-dir={profile / 'profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error") if e.text]
        pytest.fail(f"timed out waiting for {what}; errors shown on the page: {errors}")


def _error_text(driver, section: str) -> str:
    return driver.find_element(By.ID, f"{section}-error").text


def _option_values(driver, select_id: str) -> list[str]:
    return [o.get_attribute("value") for o in Select(driver.find_element(By.ID, select_id)).options]


def _style_picker_shown(driver) -> bool:
    shown = driver.find_element(By.ID, "hw-style-field").is_displayed()
    assert shown == driver.find_element(By.ID, "hw-style").is_enabled()  # hidden means disabled (never sent)
    return shown


def _post_handwriting(base: str, body: dict) -> bytes:
    request = urllib.request.Request(
        base + "/generate/handwriting",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "image/svg+xml", "X-API-Key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as r:
        return r.read()


def _screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.set_window_size(1280, max(800, min(int(height) + 140, 4000)))
    time.sleep(0.3)  # a relayout at the new size
    driver.save_screenshot(str(path))


@pytest.mark.slow
def test_demo_page(browser, server, files):
    d = browser
    d.get(server + "/")
    assert "VRNN" in d.title

    # Without the key, /models answers 401 and the page says so; with it (stored), the pickers fill.
    _wait(d, lambda d: "API key needed" in d.find_element(By.ID, "health-text").text, "the missing-key notice")
    d.find_element(By.ID, "api-key").send_keys(API_KEY)
    assert d.execute_script("return localStorage.getItem('vrnn.apiKey')") == API_KEY
    d.refresh()
    assert d.find_element(By.ID, "api-key").get_attribute("value") == API_KEY
    _wait(d, lambda d: "speech-tiny" in _option_values(d, "speech-model"), "the speech model picker")
    assert "hand-tiny" in _option_values(d, "hw-model")
    assert "speech-tiny" not in _option_values(d, "hw-model")
    assert {"speech-tiny", "hand-tiny"} <= set(_option_values(d, "score-model"))

    # (a) speech: audio source and waveform, headers shown.
    Select(d.find_element(By.ID, "speech-model")).select_by_value("speech-tiny")
    duration = d.find_element(By.ID, "speech-duration")
    duration.clear()
    duration.send_keys("0.5")
    d.find_element(By.ID, "speech-seed").send_keys("7")
    d.find_element(By.ID, "speech-generate").click()
    _wait(d, lambda d: (d.find_element(By.ID, "speech-audio").get_attribute("src") or "").startswith("blob:"), "audio")
    _wait(d, lambda d: d.find_element(By.ID, "speech-wave").get_attribute("data-samples"), "the waveform")
    assert int(d.find_element(By.ID, "speech-wave").get_attribute("data-samples")) == 8000  # 0.5 s at 16 kHz
    meta = d.find_element(By.ID, "speech-meta").text
    assert "speech-tiny" in meta and "7" in meta, meta
    assert _error_text(d, "speech") == ""

    # (b) handwriting: an inline SVG with paths, scripts impossible by construction.
    steps = d.find_element(By.ID, "hw-steps")
    steps.clear()
    steps.send_keys("150")
    # An untouched bias slider leaves bias out: the service's defaults (1 for a line, 2 with text) apply.
    assert d.find_element(By.ID, "hw-bias-out").text == "default"
    d.execute_script(RECORD_FETCH)
    d.find_element(By.ID, "hw-generate").click()
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#hw-output svg"), "the default-bias handwriting")
    assert json.loads(d.execute_script("return window.hwRequests[0]")["body"]) == {"steps": 150}
    d.execute_script("document.getElementById('hw-output').replaceChildren()")  # (so the next wait sees the next SVG)
    d.execute_script(
        "const b = document.getElementById('hw-bias'); b.value = '1.5'; b.dispatchEvent(new Event('input'));"
    )
    assert d.find_element(By.ID, "hw-bias-out").text == "1.5"
    d.find_element(By.ID, "hw-generate").click()
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#hw-output svg"), "the handwriting SVG")
    assert d.execute_script("return document.querySelectorAll('#hw-output svg path, #hw-output svg polyline').length")
    hw_meta = d.find_element(By.ID, "hw-meta").text
    assert "hand-tiny" in hw_meta
    assert _error_text(d, "hw") == ""
    # A drawn seed (up to 2**63 - 1, past a double's exact integers) goes back into the form digit for digit.
    seed = re.search(r"seed\s*(\d+)", hw_meta).group(1)
    d.find_element(By.CSS_SELECTOR, "#hw-meta button").click()
    assert d.find_element(By.ID, "hw-seed").get_attribute("value") == seed
    # With text in the box, the default text model writes it: two lines in one SVG.
    d.find_element(By.ID, "hw-text").send_keys("hello\nworld")
    d.find_element(By.ID, "hw-generate").click()
    _wait(d, lambda d: "hand-text" in d.find_element(By.ID, "hw-meta").text, "the SVG of the written text")
    assert d.execute_script("return document.querySelectorAll('#hw-output svg path').length")
    assert _error_text(d, "hw") == ""

    # The style picker: with the default model (text goes to hand-text) it lists hand-text's styles; the chosen one
    # is sent with the text, and the page shows the bytes a direct request with that style, text and seed gets.
    assert _style_picker_shown(d)
    picker = Select(d.find_element(By.ID, "hw-style"))
    assert _option_values(d, "hw-style") == ["", *STYLE_TEXTS]
    assert picker.first_selected_option.text == "no style (the model's own)"
    assert d.find_element(By.ID, "hw-style-model").text == "hand-text"
    picker.select_by_value("w002")
    seed_input = d.find_element(By.ID, "hw-seed")
    seed_input.clear()
    seed_input.send_keys("5")
    d.execute_script(RECORD_FETCH)
    d.find_element(By.ID, "hw-generate").click()
    _wait(d, lambda d: d.execute_script("return (window.hwRequests[0] || {}).answer"), "the styled handwriting")
    _wait(d, lambda d: re.search(r"seed\s*5\b", d.find_element(By.ID, "hw-meta").text), "the styled SVG shown")
    assert _error_text(d, "hw") == ""
    request = d.execute_script("return window.hwRequests[0]")
    sent = json.loads(request["body"])
    assert sent == {"bias": 1.5, "text": "hello\nworld", "seed": 5, "style": "w002"}, sent
    styled = _post_handwriting(server, sent)
    assert request["answer"] == styled.decode()
    unstyled = _post_handwriting(server, {k: v for k, v in sent.items() if k != "style"})
    assert unstyled != styled  # the style made the difference
    # Hidden (and so never sent) for a model without text or without styles; back for the text model itself.
    model_picker = Select(d.find_element(By.ID, "hw-model"))
    for name, shown in (("hand-tiny", False), ("text-plain", False), ("hand-text", True), ("", True)):
        model_picker.select_by_value(name)
        assert _style_picker_shown(d) == shown, name
    assert _option_values(d, "hw-style") == ["", *STYLE_TEXTS]
    d.find_element(By.ID, "hw-text").clear()
    # A text model that makes its lines up, with the box empty: the page shows the line it wrote (X-Text).
    model_picker.select_by_value("text-plain")
    d.execute_script(RECORD_FETCH)
    d.find_element(By.ID, "hw-generate").click()
    _wait(d, lambda d: "made-up text" in d.find_element(By.ID, "hw-meta").text, "the made-up line")
    sent = json.loads(d.execute_script("return window.hwRequests[0]")["body"])
    assert sent == {"steps": 150, "bias": 1.5, "seed": 5, "model": "text-plain"}, sent
    shown = d.find_element(By.ID, "hw-meta").text
    words = {w for line in MADE_UP_FROM for w in line.split()}
    made_up = re.search(r"made-up text\s*(.+?)\s*(?:reuse this seed|$)", shown).group(1)
    assert made_up and set(made_up.split()) <= words, shown
    model_picker.select_by_value("")

    # An API error is shown inline (a file that is not audio), and goes away on the next success.
    d.find_element(By.ID, "score-file").send_keys(str(files["bad"]))
    d.find_element(By.ID, "score-submit").click()
    _wait(d, lambda d: _error_text(d, "score"), "the inline API error")
    assert re.search(r"HTTP 4\d\d", _error_text(d, "score")), _error_text(d, "score")

    # (c) score: numbers appear.
    d.find_element(By.ID, "score-file").send_keys(str(files["wav"]))
    samples = d.find_element(By.ID, "score-samples")
    samples.clear()
    samples.send_keys("4")
    d.find_element(By.ID, "score-submit").click()
    field = (By.CSS_SELECTOR, "#score-result [data-field='nats_per_frame']")
    _wait(d, lambda d: d.find_elements(*field) and d.find_element(*field).text not in ("", "\u2013"), "the score")
    number = float(d.find_element(*field).text.replace(",", ""))
    assert math.isfinite(number)
    assert "IS, K = 4" in d.find_element(By.ID, "score-result").text
    assert _error_text(d, "score") == ""

    # (d) latent analysis of the same upload: a PNG is shown.
    d.find_element(By.ID, "latent-submit").click()
    _wait(
        d,
        lambda d: d.execute_script(
            "const i = document.getElementById('latent-img'); return i.complete && i.naturalWidth > 0"
        ),
        "the latent figure",
    )
    assert _error_text(d, "latent") == ""

    artifacts = Path(os.environ.get("ARTIFACT_DIR") or files["dir"])
    artifacts.mkdir(parents=True, exist_ok=True)
    _screenshot(d, artifacts / "demo-page.png")
    assert (artifacts / "demo-page.png").stat().st_size > 10_000

    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE" and "401" not in e.get("message", "")]
    # Failed requests the test provoked (401 before the key, 4xx for the bad file) are logged by Chromium too.
    severe = [e for e in severe if not re.search(r"status of 4\d\d", e.get("message", ""))]
    assert not severe, json.dumps(severe, indent=1)


@pytest.mark.slow
def test_page_follows_jobs(browser, files):
    """A call that outlasts the server's synchronous wait answers 202 + Location; the page polls the job's
    result and shows it as if the call had answered at once (SYNC_WAIT_S=0: every call becomes a job)."""
    d = browser
    with _serve(files, "server-async", SYNC_WAIT_S="0") as base:
        d.get(base + "/")  # another origin: the key is not stored here yet
        d.find_element(By.ID, "api-key").send_keys(API_KEY)
        steps = d.find_element(By.ID, "hw-steps")
        steps.clear()
        steps.send_keys("60")
        d.find_element(By.ID, "hw-generate").click()
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#hw-output svg"), "the handwriting SVG of a job")
        assert "hand-tiny" in d.find_element(By.ID, "hw-meta").text
        d.find_element(By.ID, "speech-generate").click()
        _wait(d, lambda d: d.find_element(By.ID, "speech-wave").get_attribute("data-samples"), "speech of a job")
        assert int(d.find_element(By.ID, "speech-wave").get_attribute("data-samples")) == 32000  # 2 s default
        assert _error_text(d, "hw") == "" and _error_text(d, "speech") == ""


# The page's source, without a browser ---------------------------------------------------------------------------


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)


def test_page_is_self_contained_and_labelled():
    """One file: no external scripts, styles, fonts or images (no CDN); every id unique; every form control
    has a label; every reference to an id (label for, aria-labelledby) resolves."""
    source = PAGE.read_text(encoding="utf-8")
    parser = _PageParser()
    parser.feed(source)
    elements = parser.elements
    ids = [a["id"] for _, a in elements if "id" in a]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert any(tag == "html" and attrs.get("lang") for tag, attrs in elements), "<html lang=...>"
    for tag, attrs in elements:
        assert not (tag == "script" and "src" in attrs), f"inline scripts only: {attrs}"
        assert not (tag == "link" and "stylesheet" in attrs.get("rel", "")), f"inline styles only: {attrs}"
        for name in ("src", "href", "action", "poster"):
            value = attrs.get(name, "")
            assert not re.match(r"(https?:)?//", value), f"<{tag} {name}={value!r}>: nothing from elsewhere"
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//|fonts\.googleapis", source)
    assert not re.search(r"fetch\(\s*['\"`]https?:", source), "API calls stay on the page's own origin"
    id_set = set(ids)
    labelled = {a["for"] for t, a in elements if t == "label" and "for" in a}
    for tag, attrs in elements:
        for ref in ("for", "aria-labelledby", "aria-describedby", "aria-controls"):
            for target in attrs.get(ref, "").split():
                assert target in id_set, f"<{tag} {ref}={target!r}> names no element"
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            assert attrs.get("id") in labelled or "aria-label" in attrs or "aria-labelledby" in attrs, attrs
    # The elements the browser test and the API contract rely on.
    for needed in (
        "speech-audio",
        "speech-wave",
        "hw-output",
        "hw-bias",
        "hw-style",
        "score-file",
        "latent-img",
        "api-key",
    ):
        assert needed in id_set, needed
    assert "X-API-Key" in source and "localStorage" in source and "DOMParser" in source
