"""The chat page in a real browser: Debian's headless Chromium driven by Selenium through
the system chromedriver. Type a prompt, watch the answer arrive in pieces, compare it with
the API's answer to the same request, reset; the screenshot is kept as an artifact
($LMFORGE_ARTIFACTS, else the test's temporary directory)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver")
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        f"Debian's chromium and chromium-driver are not installed ({CHROMIUM}, {CHROMEDRIVER}); "
        ".ci/run installs them with apt-get",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def browser(profile: str):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1100,700",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


# Records, inside the page, the length of the newest answer after every change to the
# conversation: the growth is seen however slowly the test polls (a busy machine).
WATCH = """
window.lmforgeSeen = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.msg.assistant');
  if (answers.length) window.lmforgeSeen.push(answers[answers.length - 1].textContent.length);
}).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
"""
LAST_ANSWER = """
const answers = document.querySelectorAll('.msg.assistant');
const last = answers[answers.length - 1];
return last ? [last.textContent, last.classList.contains('streaming')] : null;
"""


def chat_in_page(url: str, prompt: str, screenshot: Path, settings: dict[str, str]):
    """Open the page, set the sampling fields, send `prompt`; (the answer's text, the
    lengths of the text seen while it streamed, the tokens/s line, the messages left after
    a reset). Saves a screenshot."""
    profile = tempfile.mkdtemp(prefix="lmforge-chromium-")
    driver = browser(profile)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.05)
        wait.until(lambda d: "context" in d.find_element(By.ID, "model").text)
        for field, value in settings.items():
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.execute_script(WATCH)
        driver.find_element(By.ID, "prompt").send_keys(prompt, Keys.ENTER)

        def finished(d):
            errors = d.find_elements(By.CSS_SELECTOR, ".msg.error")
            assert not errors, f"the page shows an error: {errors[0].text}"
            last = d.execute_script(LAST_ANSWER)
            return last is not None and not last[1] and d.find_element(By.ID, "speed").text

        wait.until(finished, "the answer did not finish streaming within 60 s")
        answer, _ = driver.execute_script(LAST_ANSWER)
        seen = driver.execute_script("return window.lmforgeSeen;")
        speed = driver.find_element(By.ID, "speed").text
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        driver.find_element(By.ID, "reset").click()
        left = driver.find_elements(By.CSS_SELECTOR, ".msg")
        return answer, seen, speed, left
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_chat_page_streams_an_answer(server, tmp_path):
    from tests.serve.test_bad_input import slow_steps

    restore = slow_steps(server, 0.01)  # 10 ms a token: the page must show the answer growing
    try:
        artifacts = Path(os.environ.get("LMFORGE_ARTIFACTS", tmp_path))
        shot = artifacts / "chat-page.png"
        settings = {"temperature": "0", "max_tokens": "60", "system": "be brief"}
        answer, seen, speed, left = chat_in_page(server.url, "hello there", shot, settings)
    finally:
        restore()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    api = server.client().chat.completions.create(
        model="tiny", messages=messages, temperature=0, max_tokens=60,
        extra_body={"top_k": 50},
    )  # fmt: skip
    assert answer == api.choices[0].message.content  # the page's text is the API's
    partial = {n for n in seen if 0 < n < len(answer)}
    assert len(partial) >= 2, seen  # it arrived in pieces, not at once
    assert "tokens/s" in speed and speed.startswith(f"{api.usage.completion_tokens} tokens")
    assert left == []  # reset emptied the conversation
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
