"""Compare page section: open a sweep folder (``python -m tinyviz sweep`` or ``ablate``) and read it.

The results table (one row per run), a parallel-coordinates plot of the grid values against the final
val loss, a heatmap when the grid has two fields, and the loss curves of the chosen cells with their
seed bands (mean and min-max over seeds).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from tinyviz.experiments import sweep
from tinyviz.training.runs import RunError
from tinyviz.ui import state, widgets


def sweep_folders(root: Path) -> list[Path]:
    """Finished sweep folders directly under root (those with sweep.json and results.json), newest first."""
    try:
        found = [p for p in Path(root).iterdir() if (p / "sweep.json").is_file() and (p / "results.json").is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: -(p / "results.json").stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=8)
def _load(folder: str, mtime: float) -> tuple[dict, list[dict]]:
    return sweep.load_sweep(Path(folder))


@st.cache_data(show_spinner=False, max_entries=8)
def _metrics(folder: str, mtime: float, cells: tuple[str, ...]) -> dict:
    desc, rows = sweep.load_sweep(Path(folder))
    return sweep.load_metrics(Path(folder), [r for r in rows if r["cell"] in cells])


def render(root: Path) -> None:
    st.subheader("Open a sweep")
    folders = sweep_folders(root)
    if not folders:
        st.info(f"No sweep folders under {root}/ yet. Run one with `python -m tinyviz sweep --preset micro "
                f"--grid lr=1e-3,3e-3 --grid d_model=32,64 --seeds 3 --out {root}/sweep-lr-width`, or an ablation "
                "preset below; its folder shows up here.")
        return
    names = [p.name for p in folders]
    if state.get(state.SWEEP_FOLDER) not in names:
        state.put(state.SWEEP_FOLDER, names[0])
    name = st.selectbox("Sweep folder", names, key=state.SWEEP_FOLDER,
                        help=f"folders under {root}/ written by `tinyviz sweep` or `tinyviz ablate`")
    folder = Path(root) / name
    mtime = (folder / "results.json").stat().st_mtime
    try:
        desc, rows = _load(str(folder), mtime)
    except ValueError as e:
        st.error(str(e))
        return
    fields, seeds = desc.get("fields", []), desc.get("seeds", [])
    kind = "ablation preset" if desc.get("kind") == "ablation" else "grid over the preset"
    st.caption(f"A {kind} `{desc.get('name')}`: {', '.join(f'`{f}`' for f in fields)}; "
               f"{len(desc.get('cells', []))} cells x {len(seeds)} seed(s) = {len(rows)} runs on "
               f"{desc.get('executor', '?')}, {desc.get('wall_s', 0):.0f} s wall.")
    frame = pd.DataFrame(rows)
    if "reused_from" in frame and frame["reused_from"].isna().all():  # nothing was copied: no empty column
        frame = frame.drop(columns="reused_from")
    elif "reused_from" in frame:
        frame["reused_from"] = frame["reused_from"].fillna("trained here")
    st.dataframe(frame, hide_index=True, column_config={
        "final_loss": st.column_config.NumberColumn("final train loss", format="%.4f",
                                                    help=f"mean of the last {sweep.FINAL_WINDOW} steps"),
        "val_loss": st.column_config.NumberColumn("val loss", format="%.4f", help="the last evaluation"),
        "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
        "wall_s": st.column_config.NumberColumn("wall s", format="%.1f"),
        "reused_from": st.column_config.TextColumn("copied from", help="a finished run with this config, reused "
                                                                       "(--reuse) instead of trained again"),
    })
    if not any(r.get("val_loss") is not None for r in rows):
        st.warning("No run of this sweep has a validation loss yet (set eval_interval), so there is nothing to "
                   "plot against.")
    else:
        widgets.chart(sweep.parallel_figure(rows, fields, name), f"{name} parallel coordinates",
                      key=f"sweep_par_{name}", df=frame)
        if len(fields) == 2:
            widgets.chart(sweep.heatmap_figure(rows, fields, name), f"{name} heatmap", key=f"sweep_heat_{name}")
    cells = [c["name"] for c in desc.get("cells", [])]
    by_val: dict[str, list[float]] = {}
    for r in rows:
        if r.get("val_loss") is not None:
            by_val.setdefault(r["cell"], []).append(r["val_loss"])
    ranked = sorted(by_val, key=lambda c: sum(by_val[c]) / len(by_val[c]))
    key = f"{state.SWEEP_CELLS}_{name}"
    state.default(key, (ranked[:1] + ranked[-1:]) if len(ranked) > 1 else cells[:2])
    chosen = st.multiselect("Cells to plot", cells, key=key,
                            help="preset: the lowest and the highest final val loss; each cell's line is the mean "
                                 "over its seeds, the band the min-max")
    if not chosen:
        st.info("Pick one or more cells to see their loss curves.")
        return
    try:
        metrics = _metrics(str(folder), mtime, tuple(chosen))
    except (RunError, ValueError) as e:
        st.error(str(e))
        return
    ordered = {c: metrics[c] for c in chosen if c in metrics}
    fig = sweep.loss_figure(ordered, f"{name}: train loss (mean, min-max over {len(seeds)} seeds), val with markers",
                            smoothing=widgets.smoothing(state.SWEEP_SMOOTHING))
    widgets.chart(fig, f"{name} loss curves", key=f"sweep_curves_{name}")
