"""The MLflow UI in a real browser: headless Chromium (the system's) over `trackvision ui`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.repos import client
from tests.loopback import free_port, wait_for_port

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium spends its start-up on connections this offline machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's expect() gives up after 5 s; a cold `mlflow server` on this 2-core machine
# took 7.5 s to list 11 runs (measured after the queue test), so the first page load gets
# the same minute as every other step.
UI_TIMEOUT_MS = 60_000


@pytest.fixture
def ui(pipeline, tmp_path) -> Iterator[str]:
    """`trackvision ui` (what `make ui` runs) over the pipeline's store; yields its base URL."""
    repo, env = pipeline
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["trackvision", "ui", "--port", str(port)],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (make test installs it with apt where it can)"
)
def test_browser_sees_runs_metrics_and_the_confusion_matrix(pipeline, ui) -> None:
    from playwright.sync_api import expect, sync_playwright

    repo, _ = pipeline
    mlflow = client(repo)
    exp = mlflow.get_experiment_by_name("synthetic_text")
    runs = mlflow.search_runs([exp.experiment_id], "attributes.run_name LIKE '% @ workspace'")
    assert runs
    best = max(runs, key=lambda r: r.data.metrics["test_accuracy"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)

        # The experiment's runs, sorted by test accuracy.
        page.goto(
            f"{ui}/#/experiments/{exp.experiment_id}/runs"
            "?orderByKey=metrics.%60test_accuracy%60&orderByAsc=false"
        )
        for run in runs:
            expect(page.get_by_text(run.info.run_name).first).to_be_visible()
        expect(page.get_by_text("Sort: test_accuracy")).to_be_visible()

        # One run: its metrics, then the confusion matrix among its artifacts.
        page.goto(f"{ui}/#/experiments/{exp.experiment_id}/runs/{best.info.run_id}")
        expect(page.get_by_text("test_accuracy", exact=True)).to_be_visible()
        shown = f"{best.data.metrics['test_accuracy']}"[:6]
        expect(page.get_by_text(shown).first).to_be_visible()

        page.goto(f"{ui}/#/experiments/{exp.experiment_id}/runs/{best.info.run_id}/artifacts")
        page.get_by_text("evaluation", exact=True).first.click()
        page.get_by_text("confusion.png", exact=True).first.click()
        image = page.locator("img[src^='blob:']").first
        expect(image).to_be_visible()
        # Rendered from the PNG the server read from the store, not a broken-image placeholder.
        assert image.evaluate("img => img.naturalWidth") > 100
        browser.close()
