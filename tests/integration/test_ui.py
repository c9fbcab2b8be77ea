"""The MLflow UI in a real browser: headless Chromium (the system's) over `trackvision ui`."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.repos import client
from tests.loopback import free_port, program_on_port

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
def ui(pipeline, tmp_path) -> Iterator[tuple[str, Path]]:
    """`trackvision ui` (what `make ui` runs) over the pipeline's store; its base URL and log."""
    repo, env = pipeline
    port, log = free_port(), tmp_path / "ui.log"
    cmd = ["trackvision", "ui", "--port", str(port)]
    with program_on_port(cmd, port, log, cwd=repo, env=env, timeout=90):
        yield f"http://127.0.0.1:{port}", log


def test_the_ui_lists_each_experiments_training_runs_and_collects_no_telemetry(ui) -> None:
    base, log = ui
    links = [line for line in log.read_text().splitlines() if "training runs of " in line]
    assert any(
        "synthetic_text: " in line and "workflowType=machine_learning" in line for line in links
    )
    with urllib.request.urlopen(f"{base}/ajax-api/3.0/mlflow/ui-telemetry", timeout=60) as answer:
        assert json.loads(answer.read())["disable_ui_telemetry"] is True


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (make test installs it with apt where it can)"
)
def test_a_person_clicks_from_the_home_page_to_a_runs_confusion_matrix(pipeline, ui) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, log = ui
    repo, _ = pipeline
    mlflow = client(repo)
    exp = mlflow.get_experiment_by_name("synthetic_text")
    runs = mlflow.search_runs([exp.experiment_id], "attributes.run_name LIKE '% @ workspace'")
    assert runs
    best = max(runs, key=lambda r: r.data.metrics["test_accuracy"])
    link = next(line for line in log.read_text().splitlines() if "synthetic_text: " in line)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)

        # The home page; the sidebar's switch to "Model training" (the README says where), the
        # experiment, its runs.
        page.goto(base)
        page.get_by_text("Model training", exact=True).first.click()
        page.get_by_role("link", name="synthetic_text").first.click()
        for run in runs:
            expect(page.get_by_text(run.info.run_name).first).to_be_visible()

        # One run: its metrics, then the confusion matrix among its artifacts.
        page.get_by_role("link", name=best.info.run_name).first.click()
        expect(page.get_by_text("test_accuracy", exact=True).first).to_be_visible()
        shown = f"{best.data.metrics['test_accuracy']}"[:6]
        expect(page.get_by_text(shown).first).to_be_visible()
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("evaluation", exact=True).first.click()
        page.get_by_text("confusion.png", exact=True).first.click()
        image = page.locator("img[src^='blob:']").first
        expect(image).to_be_visible()
        # Rendered from the PNG the server read from the store, not a broken-image placeholder.
        assert image.evaluate("img => img.naturalWidth") > 100

        # The link `trackvision ui` printed opens the training runs in a browser that never
        # chose the switch (a fresh profile: MLflow's default is its GenAI view).
        fresh = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        fresh.goto(link.split("synthetic_text: ", 1)[1].strip())
        expect(fresh.get_by_text(best.info.run_name).first).to_be_visible()
        browser.close()
