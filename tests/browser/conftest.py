"""A real browser for the report and dashboard tests: Debian's Chromium, driven by Playwright.

Every page a test opens records its console errors and uncaught exceptions; a test that leaves
any fails at teardown. Screenshots go to the artefacts folder (``MODELEVAL_TEST_ARTIFACTS``,
default ``test-artifacts/`` in the checkout, ignored by git), kept after the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MODELEVAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MODELEVAL_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))


class PageProblems(list):
    """What went wrong on a page: console errors, uncaught exceptions, dialogs (a script that
    an escaping bug let run would typically open one)."""


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make prepare` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh page (its own context) whose console errors, page errors and dialogs fail the
    test; ``page.problems`` lists them for tests that check along the way."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    problems = PageProblems()
    opened.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
              if m.type == "error" else None)
    opened.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def dialog(d) -> None:
        problems.append(f"dialog {d.type}: {d.message}")
        d.dismiss()

    opened.on("dialog", dialog)
    opened.problems = problems
    try:
        yield opened
    finally:
        context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def screenshot(page, request):
    """``screenshot(name)`` saves the page as test-artifacts/<test>-<name>.png and returns it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
