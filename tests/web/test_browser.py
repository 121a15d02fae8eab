"""The page in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium),
against the real stack: token prompt, own text, training from the form with live charts, re-attaching
after a reload, generation that streams and stops, errors in words, deleting a model, screenshots.

The tests run in order and share one browser; each leaves the page usable for the next.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.web.conftest import REPO, TOKEN, stop_case

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The README's picture is docs/web-page.png, from a run with TEXTGEN_SCREENSHOT_DIR=docs; other runs
# leave the work tree alone.
SCREENSHOTS = Path(REPO, os.environ.get("TEXTGEN_SCREENSHOT_DIR") or tempfile.gettempdir())
WAIT_S = 60
PAGE_MODEL = "page-model"
# Small enough to train in seconds, long enough (several epochs) to watch the charts grow.
FORM = {"layer-sizes": "16", "epochs": "5", "examples-per-epoch": "512", "batch-size": "64",
        "validation-split": "0.0625", "learning-rate": "0.01"}


@pytest.fixture(scope="module")
def browser(web_stack):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        subprocess.run([str(REPO / "deploy" / "local" / "install-chromium.sh")], check=True)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="textgen-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def el(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait_until(condition, timeout=WAIT_S, what="the condition", diagnose=None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f": {diagnose()}" if diagnose else ""))
        time.sleep(0.05)


def fill(driver, element_id, value):
    field = el(driver, element_id)
    field.clear()
    field.send_keys(value)


def text(driver, element_id):
    return driver.execute_script("return document.getElementById(arguments[0]).textContent", element_id)


def attr(driver, element_id, name):
    return driver.execute_script("return document.getElementById(arguments[0]).dataset[arguments[1]]",
                                 element_id, name)


def error_text(driver):
    box = el(driver, "error")
    return "" if not box.is_displayed() else box.text


def select(driver, element_id, value):
    from selenium.webdriver.support.ui import Select

    Select(el(driver, element_id)).select_by_value(value)


def screenshot(driver, name):
    """A full-page PNG in SCREENSHOTS."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, height + 100)
    driver.execute_script("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


def test_the_page_asks_for_the_token_the_server_needs_then_loads(browser, web_stack):
    browser.get(web_stack.url + "/")
    wait_until(lambda: el(browser, "token-box").is_displayed(), what="the token prompt")
    assert "needs metadata 'authorization: Bearer <token>'" in error_text(browser)
    fill(browser, "token", TOKEN)
    el(browser, "token-save").click()
    wait_until(lambda: text(browser, "status").startswith("Ready"), what="the page to load")
    assert not el(browser, "token-box").is_displayed()
    assert error_text(browser) == ""
    corpora = browser.execute_script("return [...document.querySelectorAll('#corpus option')].map(o => o.value)")
    assert "tfjs-code" in corpora and "shakespeare" in corpora
    # the training form offers the best measured recipe first, and says what it sets
    recipes = browser.execute_script("return [...document.querySelectorAll('#recipe option')].map(o => o.value)")
    assert recipes == ["original", "fast", "finetune"]
    assert el(browser, "recipe").get_attribute("value") == "fast"
    # its one-line headline shows; the whole description and what it sets open on demand
    assert text(browser, "recipe-headline") == ("the best model per CPU minute measured here: warmup, cosine "
                                                "decay, clipping, dropout, 224,224")
    assert not el(browser, "recipe-info").is_displayed()
    el(browser, "recipe-headline").click()
    assert ("Sets objective = all, lr_schedule = cosine, warmup_steps = 300, clip_norm = 1, dropout = 0.2, "
            "batch_size = 32, lstm_layer_sizes = 224,224."
            in text(browser, "recipe-info"))
    assert el(browser, "objective").get_attribute("value") == ""  # empty: the recipe's
    assert el(browser, "layer-sizes").get_attribute("value") == ""  # the recipe's model size, shown as the hint
    assert el(browser, "layer-sizes").get_attribute("placeholder") == "224,224"
    select(browser, "recipe", "original")
    assert el(browser, "layer-sizes").get_attribute("placeholder") == "128,128"
    select(browser, "recipe", "fast")
    # the gateway passes the token on and never writes it down
    assert TOKEN not in web_stack.log("web").read_text()


def test_own_text_pasted_on_the_page_becomes_a_corpus(browser, web_stack):
    el(browser, "own-text-box").click()
    own = "The quick brown fox jumps over the lazy dog. " * 40
    browser.execute_script("document.getElementById('own-text').value = arguments[0]", own)
    fill(browser, "own-name", "fox.txt")
    el(browser, "upload").click()
    wait_until(lambda: text(browser, "status").startswith("Loaded fox.txt"), what="the upload")
    assert text(browser, "status") == f"Loaded fox.txt: {len(own)} bytes. Train a model on it below."
    chosen = browser.execute_script("return document.getElementById('corpus').selectedOptions[0].textContent")
    assert chosen.startswith("fox.txt (your text")


def test_layer_size_zero_shows_the_servers_message_and_the_page_still_works(browser, web_stack):
    select(browser, "corpus", "tfjs-code")
    for field, value in FORM.items():
        fill(browser, field, value)
    fill(browser, "layer-sizes", "0")
    fill(browser, "model-name", PAGE_MODEL)
    el(browser, "train").click()
    wait_until(lambda: error_text(browser), what="the error message")
    assert error_text(browser) == ("Could not start training: bad training options: "
                                   "lstm layer size must be between 1 and 4096, got 0")
    assert el(browser, "train").is_enabled()
    assert text(browser, "job-state") == "No training job."


def test_training_from_the_form_draws_the_charts_and_survives_a_reload(browser, web_stack):
    fill(browser, "layer-sizes", FORM["layer-sizes"])
    el(browser, "train").click()
    wait_until(lambda: attr(browser, "job-state", "state") == "started", what="the job to start")
    assert not el(browser, "train").is_enabled() and el(browser, "cancel-job").is_enabled()
    job_id = browser.execute_script("return localStorage.getItem('textgen.job')")
    options = web_stack.http.get(f"/api/v1/jobs/{job_id}").json()["options"]
    # the recipe's settings, as the form left them empty; the form's own values over them
    assert (options["recipe"], options["objective"], options["lr_schedule"], options["dropout"], options["epochs"]) == \
        ("fast", "all", "cosine", 0.2, 5)
    points = wait_until(lambda: int(attr(browser, "epoch-chart", "points")), what="a first epoch point")
    assert attr(browser, "job-state", "state") == "started"
    assert int(attr(browser, "batch-chart", "points")) > 0
    # Reopening the page re-attaches to the running job: its events replay from the start.
    browser.refresh()
    wait_until(lambda: int(attr(browser, "epoch-chart", "points") or 0) >= points, what="the replayed epochs")
    seen = set()
    while (state := attr(browser, "job-state", "state")) != "finished":
        assert state == "started", text(browser, "job-state")
        seen.add(int(attr(browser, "epoch-chart", "points")))
        time.sleep(0.05)
    assert int(attr(browser, "epoch-chart", "points")) == 5
    assert len(seen | {5}) >= 2, f"the epoch chart never grew while the page watched: {seen}"
    assert text(browser, "job-state") == f"Finished: {PAGE_MODEL} version 1."
    # The page lists the models once on "finished" (the server loads the model before saying so): the
    # new model is in the table and chosen for generation.
    wait_until(lambda: browser.execute_script(
        "return !!document.querySelector(`#models tr[data-model='${arguments[0]}']`)", PAGE_MODEL),
        what="the new model in the table")
    assert el(browser, "gen-model").get_attribute("value") == PAGE_MODEL
    samples = browser.execute_script("return document.querySelectorAll('#samples .epoch').length")
    assert samples == 5
    assert el(browser, "train").is_enabled() and not el(browser, "cancel-job").is_enabled()


def output_length(browser):
    """Characters (code points, as the server counts them; ``.length`` counts an emoji twice)."""
    return browser.execute_script("return [...document.getElementById('output-text').textContent].length")


def test_generated_text_appears_while_it_streams(browser, web_stack):
    select(browser, "gen-model", PAGE_MODEL)
    fill(browser, "gen-length", "20000")
    fill(browser, "temperature", "0.5")
    fill(browser, "seed", "11")
    el(browser, "seed-text").clear()
    el(browser, "generate").click()
    # One look at the page, taken at once: some of the text, while the stream is still running.
    look = wait_until(lambda: (lambda s: 0 < s["length"] < 20000 and s)(browser.execute_script(
        "const $ = (id) => document.getElementById(id);"
        "return {length: $('output-text').textContent.length, state: $('gen-info').dataset.state,"
        "        stop: !$('stop').disabled, generate: !$('generate').disabled}")), what="some text")
    assert look == {"length": look["length"], "state": "running", "stop": True, "generate": False}
    partial = look["length"]
    wait_until(lambda: attr(browser, "gen-info", "state") == "done", what="the end of the stream")
    assert output_length(browser) == 20000 > partial
    assert text(browser, "gen-info").startswith(f"20000 characters from {PAGE_MODEL} v1, seed 11")
    assert text(browser, "output-seed")  # an empty seed text: the server picked a slice, shown in grey


def test_stop_ends_a_generation_and_frees_its_stream(browser, web_stack):
    fill(browser, "gen-length", "400000")
    el(browser, "generate").click()
    wait_until(lambda: output_length(browser) > 0, what="some text")
    el(browser, "stop").click()
    wait_until(lambda: attr(browser, "gen-info", "state") == "stopped", what="the stop")
    stopped_at = output_length(browser)
    assert text(browser, "gen-info").startswith(f"Stopped after {stopped_at} characters (seed ")
    time.sleep(0.5)
    assert output_length(browser) == stopped_at < 400000
    assert el(browser, "generate").is_enabled() and not el(browser, "stop").is_enabled()
    # The server has 4 stream slots: stopped streams must have given theirs back.
    for _ in range(5):
        reply = web_stack.http.post("/api/v1/generate", json={"model": PAGE_MODEL, "length": 5, "stream": False})
        assert reply.status_code == 200, reply.text


def test_bad_temperature_shows_the_servers_message_and_the_page_still_works(browser, web_stack):
    fill(browser, "gen-length", "300")
    fill(browser, "temperature", "-1")
    el(browser, "generate").click()
    wait_until(lambda: error_text(browser), what="the error message")
    assert error_text(browser) == "Could not generate: temperature must be a finite number >= 0 (0 = greedy), got -1.0"
    assert el(browser, "generate").is_enabled()
    fill(browser, "temperature", "0.5")
    el(browser, "generate").click()
    wait_until(lambda: attr(browser, "gen-info", "state") == "done", what="a generation after the error")
    assert output_length(browser) == 300
    assert error_text(browser) == ""


def test_seed_text_and_output_are_inserted_as_text_not_html(browser, web_stack):
    markup = "<img src=x onerror=alert(1)><b>bold</b>"
    browser.execute_script("document.getElementById('seed-text').value = arguments[0]", markup)
    fill(browser, "gen-length", "50")
    el(browser, "generate").click()
    wait_until(lambda: attr(browser, "gen-info", "state") == "done", what="the generation")
    assert text(browser, "output-seed") == markup
    assert browser.execute_script("return document.querySelectorAll('#output *').length") == 2  # the two spans


def test_a_stop_string_ends_the_generation_and_the_page_says_so(browser, web_stack):
    prompt = "function ("
    sampled = web_stack.http.post("/api/v1/generate", json={"model": PAGE_MODEL, "prompt": prompt, "length": 200,
                                                            "temperature": 1.0, "seed": 8, "stream": False}).json()["text"]
    stop, expected = stop_case(prompt, sampled)
    browser.execute_script("document.getElementById('seed-text').value = arguments[0]", prompt)
    fill(browser, "gen-length", "200")
    fill(browser, "temperature", "1")
    fill(browser, "seed", "8")
    fill(browser, "stop-strings", f"\u00a7never\u00a7, {stop}")
    el(browser, "generate").click()
    wait_until(lambda: attr(browser, "gen-info", "state") == "done", what="the generation")
    assert text(browser, "output-text") == expected
    assert attr(browser, "gen-info", "reason") == "stop"
    assert text(browser, "gen-info").endswith(
        "End reason: stop (it generated a stop string, left out of the text).")
    el(browser, "stop-strings").clear()
    fill(browser, "temperature", "0.5")


def test_screenshot_mid_training_and_mid_generation(browser, web_stack):
    """The README's picture: a model training on (its charts filling) while another one writes. The
    training keeps training the page's model (its row's "Keep training" button)."""
    from selenium.webdriver.common.by import By

    el(browser, "seed-text").clear()
    select(browser, "corpus", "tfjs-code")
    for field, value in {**FORM, "epochs": "40"}.items():
        fill(browser, field, value)
    el(browser, "model-name").clear()
    browser.find_element(By.CSS_SELECTOR, f"#models tr[data-model='{PAGE_MODEL}'] td:last-child button:nth-child(2)").click()
    assert el(browser, "from-model").get_attribute("value") == PAGE_MODEL
    assert not el(browser, "layer-sizes").is_enabled()  # the model's own layers are kept
    el(browser, "train").click()
    wait_until(lambda: attr(browser, "job-state", "state") == "started", what="the job to start")
    job_id = browser.execute_script("return localStorage.getItem('textgen.job')")
    job = web_stack.http.get(f"/api/v1/jobs/{job_id}").json()
    assert (job["from_model"], job["model_name"], job["options"]["epochs"]) == (f"{PAGE_MODEL}:1", PAGE_MODEL, 40)
    wait_until(lambda: int(attr(browser, "epoch-chart", "points") or 0) >= 3 and
               attr(browser, "job-state", "state") == "started", what="three epochs",
               diagnose=lambda: (text(browser, "status"), text(browser, "job-state"), error_text(browser)))
    select(browser, "gen-model", PAGE_MODEL)
    fill(browser, "gen-length", "100000")
    fill(browser, "temperature", "0.6")
    el(browser, "generate").click()
    wait_until(lambda: output_length(browser) > 1500, what="a screenful of text")
    path = screenshot(browser, "web-page.png")
    assert path.stat().st_size > 20_000
    el(browser, "stop").click()
    el(browser, "cancel-job").click()
    wait_until(lambda: attr(browser, "job-state", "state") == "cancelled", what="the cancelled job")
    assert text(browser, "job-state") == "Cancelled."


def test_start_from_offers_the_base_model_first_with_the_finetune_recipe(browser, web_stack):
    """The worker installed the shipped base model when it started; the page offers it as the first model
    to start from, and starting from a model picks the finetune recipe (the server's default there)."""
    wait_until(lambda: "base-english" in [m["name"] for m in web_stack.http.get("/api/v1/models").json()["models"]],
               what="the worker to install base-english")
    browser.refresh()
    wait_until(lambda: text(browser, "status").startswith("Ready"), what="the page to load")
    options = browser.execute_script("return [...document.querySelectorAll('#from-model option')].map(o => o.value)")
    assert options[:2] == ["", "base-english"], options
    select(browser, "from-model", "base-english")
    browser.execute_script("document.getElementById('from-model').dispatchEvent(new Event('change'))")
    assert el(browser, "recipe").get_attribute("value") == "finetune"
    assert not el(browser, "layer-sizes").is_enabled()
    select(browser, "from-model", "")
    browser.execute_script("document.getElementById('from-model').dispatchEvent(new Event('change'))")
    assert el(browser, "recipe").get_attribute("value") == "fast"
    # Each model row offers the model for TensorFlow.js.
    from selenium.webdriver.common.by import By

    row = browser.find_element(By.CSS_SELECTOR, "#models tr[data-model='base-english']")
    next(b for b in row.find_elements(By.TAG_NAME, "button") if b.text == "Download for TensorFlow.js").click()
    wait_until(lambda: text(browser, "status").startswith("Downloaded base-english for TensorFlow.js"),
               what="the download", diagnose=lambda: error_text(browser))


def test_a_model_json_imports_from_the_page(browser, web_stack, tmp_path):
    """The import form sends model.json and weights.bin as a form; the new model is listed at once."""
    import io
    import zipfile

    zipfile.ZipFile(io.BytesIO(web_stack.http.get(f"/api/v1/models/{PAGE_MODEL}/tfjs").content)).extractall(tmp_path)
    browser.execute_script("document.getElementById('import-section').open = true")
    el(browser, "import-json").send_keys(str(tmp_path / "model.json"))
    el(browser, "import-weights").send_keys(str(tmp_path / "weights.bin"))
    fill(browser, "import-name", "page-import")
    el(browser, "import").click()
    wait_until(lambda: text(browser, "status").startswith("Imported page-import version 1"),
               what="the import", diagnose=lambda: error_text(browser))
    options = browser.execute_script("return [...document.querySelectorAll('#gen-model option')].map(o => o.value)")
    assert "page-import" in options


def test_deleting_a_model_removes_it_from_the_table(browser, web_stack):
    row = f"#models tr[data-model='{PAGE_MODEL}'] button.delete"
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, row).click()  # arms it
    assert browser.find_element(By.CSS_SELECTOR, row).text == "Delete all 1 version(s)?"
    browser.find_element(By.CSS_SELECTOR, row).click()
    wait_until(lambda: text(browser, "status") == f"Deleted {PAGE_MODEL} (version 1).", what="the deletion")
    assert not browser.find_elements(By.CSS_SELECTOR, f"#models tr[data-model='{PAGE_MODEL}']")
    assert web_stack.http.get(f"/api/v1/models/{PAGE_MODEL}").status_code == 404


def test_a_generate_only_key_gets_a_page_that_says_why_training_is_off(browser, web_stack, tiny_model):
    made = web_stack.http.post("/api/v1/keys", json={"scopes": ["generate"], "name": "page-generate"}).json()
    browser.execute_script("sessionStorage.clear()")
    browser.get(web_stack.url + "/")
    wait_until(lambda: el(browser, "token-box").is_displayed(), what="the token prompt")
    fill(browser, "token", made["secret"])
    el(browser, "token-save").click()
    wait_until(lambda: text(browser, "status").startswith("Ready"), what="the page to load",
               diagnose=lambda: error_text(browser))
    try:
        assert error_text(browser) == ""
        assert text(browser, "key-info") == f"Key {made['key']['id']} (page-generate): scopes generate."
        notes = browser.execute_script(
            "return [...document.querySelectorAll('.scope-note')].filter(n => !n.hidden).map(n => n.textContent)")
        assert notes == [f"{what} needs a key with scope 'train'; this key has generate."
                         for what in ("Uploading and choosing a text to train on", "Importing a model", "Training")]
        for element_id in ("train", "upload", "corpus", "import", "model-name", "from-model"):
            assert not el(browser, element_id).is_enabled(), element_id
        assert el(browser, "gen-model").is_enabled()
        wait_until(lambda: el(browser, "generate").is_enabled(), what="generation to be offered")
        from selenium.webdriver.common.by import By

        delete = browser.find_element(By.CSS_SELECTOR, "#models tr[data-model='tiny-web'] button.delete")
        assert not delete.is_enabled()
        assert delete.get_attribute("title") == "Deleting a model needs a key with scope 'admin'; this key has generate."
    finally:  # the next tests run with the stack's all-scopes token again
        browser.execute_script("sessionStorage.setItem('textgen.token', arguments[0])", TOKEN)
        browser.get(web_stack.url + "/")


def test_the_page_offers_older_versions_by_reference_and_generates_from_one(browser, web_stack, tiny_model):
    source = web_stack.data_dir / "models" / "tiny-web" / "1"
    for version in (1, 2):  # the same weights as two versions
        shutil.copytree(source, web_stack.data_dir / "models" / "page-ref" / str(version))
    browser.get(web_stack.url + "/")
    wait_until(lambda: text(browser, "status").startswith("Ready"), what="the page to load",
               diagnose=lambda: error_text(browser))
    options = browser.execute_script("return [...document.querySelectorAll('#gen-model option')].map(o => o.value)")
    assert "page-ref" in options and "page-ref:1" in options and "page-ref:2" not in options  # 2 is the latest
    select(browser, "gen-model", "page-ref:1")
    browser.execute_script("document.getElementById('seed-text').value = arguments[0]", "function (")
    fill(browser, "gen-length", "40")
    fill(browser, "temperature", "1")
    fill(browser, "seed", "9")
    el(browser, "stop-strings").clear()
    el(browser, "generate").click()
    wait_until(lambda: attr(browser, "gen-info", "state") == "done", what="the generation",
               diagnose=lambda: error_text(browser))
    expected = web_stack.http.post("/api/v1/generate", json={"model": "page-ref:1", "prompt": "function (",
                                                             "length": 40, "temperature": 1.0, "seed": 9,
                                                             "stream": False}).json()
    assert expected["start"]["version"] == 1
    assert text(browser, "output-text") == expected["text"]
    assert text(browser, "gen-info").startswith("40 characters from page-ref v1, seed 9")
