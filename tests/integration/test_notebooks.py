"""The notebooks in notebooks/, executed end to end with nbclient.

The kernel is this interpreter (a kernelspec written to a temporary directory, so nothing has to be
installed with ``ipykernel install``) and runs with its own ``KAPPALAKE_HOME``: its own
broker and its own chDB directory (chDB allows one process per directory, and the test session may hold
its own), sharing the session's jar cache. explore.ipynb runs first and produces the events
backfill.ipynb then replays; backfill.ipynb also runs on its own (it produces when the topic is empty).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack
from tests.conftest import CONF, REPO

NOTEBOOKS = REPO / "notebooks"
KERNEL = "kappalake-tests"
EVENTS = 3000
CELL_TIMEOUT = 600  # seconds per cell; a whole notebook takes two to three minutes on two cores


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec for this interpreter, found only by this manager."""
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels"
    (kernels / KERNEL).mkdir(parents=True)
    (kernels / KERNEL / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kappalake tests", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.fixture(scope="module")
def notebook_home(test_home: HomeLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeLayout]:
    """The notebooks' data dir (shared by both, like a user's); its broker is stopped at the end."""
    layout = HomeLayout(home=tmp_path_factory.mktemp("notebook-home"), cache=test_home.cache)
    yield layout
    ClickHouseEndpoint(layout).down()
    LocalStack(layout).down()


def kernel_env(layout: HomeLayout, scratch: Path) -> dict[str, str]:
    env = {**os.environ, "KAPPALAKE_HOME": str(layout.home), "KAPPALAKE_CACHE": str(layout.cache),
           "KAPPALAKE_CONF": str(CONF), "KAPPALAKE_TARGET": "local", "IPYTHONDIR": str(scratch / "ipython"),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(NOTEBOOKS), os.environ.get("PYTHONPATH")]))}
    # The notebooks find (here: create) the PII key in the data dir; ClickHouse is the data dir's endpoint; figures
    # go inline whatever backend the environment asks for.
    for name in ("KAPPALAKE_PII_KEY", "CLICKHOUSE_DSN", "MPLBACKEND"):
        env.pop(name, None)
    return env


def run_notebook(name: str, parameters: str, layout: HomeLayout, specs: KernelSpecManager,
                 scratch: Path) -> nbformat.NotebookNode:
    """Execute notebooks/<name>.ipynb with ``parameters`` injected after its parameters cell; the executed
    notebook is written to ``scratch`` for inspection."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(parameters)
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    manager = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs,
                                 connection_file=str(scratch / f"kernel-{name}.json"))
    # The kernel runs in the scratch dir (Spark 4 leaves an artifacts/ folder in its working directory)
    # and imports notebooks/_setup.py through PYTHONPATH, as it would from notebooks/ under Jupyter.
    client = NotebookClient(nb, km=manager, timeout=CELL_TIMEOUT, startup_timeout=120,
                            resources={"metadata": {"path": str(scratch)}})
    try:
        # cleanup_kc: shut the kernel down at the end (nbclient leaves a kernel manager it was given alone),
        # so the next notebook can open the same chDB directory.
        client.execute(env=kernel_env(layout, scratch), cleanup_kc=True)
    finally:
        nbformat.write(nb, scratch / f"{name}.executed.ipynb")
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def text_of(nb: nbformat.NotebookNode) -> str:
    parts = []
    for output in outputs(nb):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def check(nb: nbformat.NotebookNode) -> str:
    errors = [o for o in outputs(nb) if o["output_type"] == "error"]
    assert not errors, "\n".join(f"{o['ename']}: {o['evalue']}" for o in errors)
    images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert images, "the notebook showed no figure"
    return text_of(nb)


@pytest.mark.timeout(900)
def test_explore_notebook(notebook_home: HomeLayout, kernel_specs: KernelSpecManager, tmp_path: Path) -> None:
    nb = run_notebook("explore", f'PIPELINE = "payments"\nEVENTS = {EVENTS}', notebook_home, kernel_specs, tmp_path)
    text = check(nb)
    assert "PII key: none found: created a new local key" in text
    assert f"produced {EVENTS} events" in text
    assert f"bronze: {EVENTS} rows" in text
    assert "card_velocity_1m (payments_card_velocity_1m, tumbling window)" in text
    assert (notebook_home.home / "pii.key").is_file()
    assert (notebook_home.home / "clickhouse").is_dir()  # the data dir's own endpoint, not the session's


@pytest.mark.timeout(900)
def test_backfill_notebook(notebook_home: HomeLayout, kernel_specs: KernelSpecManager, tmp_path: Path) -> None:
    nb = run_notebook("backfill", f'PIPELINE = "payments"\nEVENTS = {EVENTS}', notebook_home, kernel_specs,
                      tmp_path)
    text = check(nb)
    assert "PII key: " in text and "pii.key" in text  # the key explore created (or, run alone, a new one)
    assert f"topic records: {EVENTS}" in text  # explore's events (or, run alone, its own)
    assert f"dry run: {EVENTS} records in 3 partitions" in text
    assert f"read {EVENTS} records" in text
    for view in ("card_velocity_1m", "card_velocity_5m_sliding"):
        assert re.search(rf"^{view}: [1-9]\d* windows rewritten with newer versions, same values; [1-9]\d* earlier "
                         "windows untouched$", text, re.MULTILINE), view
