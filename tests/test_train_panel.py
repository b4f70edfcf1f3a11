"""The live panel asks for one early redraw of its slower charts, and only one: right after Start they draw
with nothing yet, and should not wait their whole 30-s turn once the first steps or snapshot land."""

import pytest

from tinyviz.ui import train_panel


class _Run:
    def __init__(self, snapshots):
        self._snapshots = snapshots

    def snapshot_steps(self):
        return self._snapshots


@pytest.mark.parametrize(("drew", "metrics", "snapshots", "behind"), [
    (None, [{"step": 1}], [10], False),  # the slower charts have not drawn this session: they draw with the page
    (("other-run", False, False), [{"step": 1}], [10], False),  # what they drew was another run
    (("run", False, False), [], [], False),  # drew before the first step, and there is none yet
    (("run", False, False), [{"step": 1}], [], True),  # ... and the first steps have landed
    (("run", True, False), [{"step": 1}], [], False),  # drew the steps, no snapshot yet: still none
    (("run", True, False), [{"step": 1}], [100], True),  # ... and the first snapshot has landed
    (("run", True, True), [{"step": 1}], [100], False),  # drew everything (or a redraw is on its way)
])
def test_slower_charts_are_redrawn_early_only_when_what_they_lacked_has_landed(monkeypatch, drew, metrics,
                                                                                 snapshots, behind):
    monkeypatch.setattr(train_panel.state, "get", lambda key, default=None: drew)
    monkeypatch.setattr(train_panel.loaders, "open_run", lambda run_id: _Run(snapshots))
    assert train_panel._slower_charts_behind("run", {"metrics": metrics}) is behind
