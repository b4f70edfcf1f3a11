"""Peak memory of a process holding what the app holds with a run open (run by benchmarks.bench).

python -m benchmarks.memprobe RUN_FOLDER  ->  one JSON line: {"peak_rss_mb": ..., "streamlit_imported": true}
"""

import json
import sys
from pathlib import Path

from benchmarks.bench import _maxrss_mb
from tinyviz.analysis import probes
from tinyviz.config import SampleConfig
from tinyviz.model.sampling import generate
from tinyviz.training.runs import Run


def child_app(path: str) -> None:
    """What the app process holds with the demo run open: libraries, model, metrics, snapshots, a capture."""
    import plotly.graph_objects  # noqa: F401  (the app imports it for every page)
    import streamlit  # noqa: F401
    run = Run.open(Path(path))
    model, tokenizer = run.load_model(), run.tokenizer()
    run.metrics()
    for step in run.snapshot_steps():
        run.load_snapshot(step)
    prompt = run.meta.get("probe_prompt") or "Once upon a time"
    probes.probe_snapshot(model, tokenizer.encode(prompt)[: model.cfg.n_ctx])
    generate(model, tokenizer, prompt[:20], SampleConfig(max_new_tokens=50))
    print(json.dumps({"peak_rss_mb": _maxrss_mb(), "streamlit_imported": "streamlit" in sys.modules}))


if __name__ == "__main__":
    child_app(sys.argv[1])
