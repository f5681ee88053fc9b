"""notebooks/tour.ipynb runs end to end in a fresh Jupyter kernel (nbclient), from a scratch folder, with
this checkout's minigpt; it is stored without outputs."""
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"


def test_tour_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    for c in code:
        assert c.get("outputs") == [] and c.get("execution_count") is None, "clear the notebook's outputs"


def test_tour_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks")
    pytest.importorskip("ipykernel", reason="ipykernel (the python3 Jupyter kernel) is needed to run the notebooks")
    # the kernel is a new process: it must import this checkout's minigpt
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")
    assert "backward reached the blocks in the order [1, 0]" in text
    assert "unfused:    23 ops" in text and "as trained: 17 ops" in text
    assert "PASS: layer_norm" in text
    assert "FeedForwardOp" in text and "LinearGELUOp" not in text.split("as trained:")[1].split("\n")[0]
    assert (tmp_path / "tour-nb" / "run" / "stats.jsonl").exists()
    assert (tmp_path / "tour-nb" / "attn-run" / "attention.npy").exists()
