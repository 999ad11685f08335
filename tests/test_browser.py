"""The stock MLflow UI that ``autopeft ui`` serves, driven in a real headless Chromium (Debian's
``chromium`` package, through Playwright): what a user sees of a search without clicking around.

Screenshots go to ``$AUTOPEFT_SCREENSHOTS`` when it is set (to look at them), else to the test's
temporary folder.
"""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from playwright.sync_api import sync_playwright

from test_ui import start_ui


@pytest.fixture
def ui(searched, tmp_path):
    """``autopeft ui`` on the shared search: (its printed URL, the job)."""
    process, _ = start_ui(searched, tmp_path)
    url = process.stdout.readline().split()[5]
    yield url, searched
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def test_the_mlflow_ui_opens_on_the_search_with_its_trials_quality_and_size_and_its_pareto_chart(ui, tmp_path):
    url, job = ui
    chromium = shutil.which("chromium")
    assert chromium, "install Debian's chromium package (.ci/run does)"
    shots = Path(os.environ.get("AUTOPEFT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(job.mlflow_uri)
    experiment = client.get_experiment_by_name(job.name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags["autopeft.kind"] == "search")
    trials = sorted(r.info.run_name for r in runs if r.data.tags["autopeft.kind"] == "trial")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        deadline = time.time() + 90
        while True:  # the server takes a few seconds to come up
            try:
                page.goto(url)
                break
            except Exception:
                assert time.time() < deadline, "the MLflow UI did not come up"
                time.sleep(1)
        rows = page.locator(".ag-row")
        rows.first.wait_for(timeout=90_000)
        if page.get_by_role("button", name="Close").count():  # MLflow's assistant panel, as a user would close it
            page.get_by_role("button", name="Close").first.click()
        # the model-training workspace, the search's run with quality and size as the first columns
        assert page.get_by_text("Model training", exact=True).count() and page.get_by_text("Runs", exact=True).count()
        page.get_by_text("quality", exact=True).first.wait_for(timeout=30_000)
        headers = [h.strip() for h in page.locator(".ag-header-cell").all_inner_texts()]
        assert {"quality", "trainable_params", "plan"} <= set(headers), headers
        assert headers.index("quality") < headers.index("trainable_params") < headers.index("plan")
        assert parent.info.run_name in rows.first.inner_text()
        page.screenshot(path=str(shots / "runs.png"))

        page.locator("button[data-component-id*=runnamecellrenderer]").first.click()  # expand the search's run
        for name in trials:
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        quality = client.get_run(next(r.info.run_id for r in runs if r.info.run_name == trials[0])).data.metrics["quality"]
        index = page.locator(".ag-row", has_text=trials[0]).first.get_attribute("row-index")
        row = " ".join(page.locator(f".ag-row[row-index='{index}']").all_inner_texts())  # pinned and scrolled parts
        assert f"{quality:.3g}"[:4] in row  # its quality in its row, as MLflow rounds it
        page.screenshot(path=str(shots / "runs-expanded.png"))

        page.locator("label:has(input[value=CHART])").click(force=True)  # the chart view: quality against size first
        section = page.get_by_text("Quality against trainable parameters")
        section.first.wait_for(timeout=30_000)
        points = page.locator(".js-plotly-plot .scatterlayer .point")
        points.first.wait_for(timeout=60_000)
        assert points.count() == len(trials)  # a point per trial, drawn
        page.screenshot(path=str(shots / "charts.png"))

        root = url.split("/#/")[0]
        page.goto(f"{root}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}/artifacts"
                  "?workflowType=machine_learning")
        page.get_by_text("pareto.html", exact=True).first.click()
        frame = page.frame_locator("iframe").first
        frame.locator("svg circle").first.wait_for(timeout=30_000)  # the interactive chart, a point per trial
        assert frame.locator("svg circle").count() == len(trials)
        assert frame.locator("svg circle title").first.text_content().startswith("trial ")
        page.screenshot(path=str(shots / "pareto-artifact.png"))
        browser.close()
    for name in ("runs.png", "runs-expanded.png", "charts.png", "pareto-artifact.png"):
        assert (shots / name).stat().st_size > 10_000
