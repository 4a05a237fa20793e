"""Notebook 05's ipywidgets UI: toggle the branch of each PTA block, pin a configuration, move a latency budget.

Wiring only: the state, the reports and the budget rule are `paperkit.studies.compare_branches` and
`paperkit.studies.branch_reports`; this module draws them and forwards clicks, so tests (and papermill,
without a browser) drive the same objects headlessly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from paperkit.config_tree import REFERENCE
from paperkit.models.pta import MODES
from paperkit.studies.branch_reports import LATENCY_BACKEND, METRIC_KEYS, MODE_NAMES, BranchState, compare
from paperkit.studies.compare_branches import sample_grid_png

__all__ = ["BranchUI", "build_widget"]


@dataclass
class BranchUI:
    """The widgets of `build_widget`, kept addressable so tests (and users) can drive them."""

    state: BranchState
    root: Any
    toggles: list[Any]
    pin_button: Any
    unpin_button: Any
    budget: Any
    budget_label: Any
    table: Any
    grid: Any
    _syncing: bool = False
    note: Any = None  # what is missing on the recorded path (sample faces), None when live
    log: Any = None  # ipywidgets.Output: a callback's traceback shows here, in the notebook (not a hidden log)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.root._repr_mimebundle_(**kwargs)

    @property
    def config(self) -> str:
        return "".join(t.value for t in self.toggles)

    def refresh(self) -> None:
        """Redraw the comparison table and the face grid for the shown configurations."""
        shown = self.state.shown()
        df = compare(self.state.reports, shown + ([REFERENCE] if REFERENCE in self.state.reports else []))
        cols = ["config", "blocks", "params_m", "madds_m", "latency_ms", *METRIC_KEYS, "val_acer"]
        self.table.value = (f"<b>shown: {', '.join(shown)}</b>"
                            + (f" (pinned: {self.state.pinned})" if self.state.pinned else "")
                            + df[cols].to_html(index=False, float_format=lambda v: f"{v:.2f}",
                                               classes="paperkit-shown"))
        if self.state.samples is not None or not self.state.recorded:
            self.grid.value = sample_grid_png(self.state, shown)

    def set_config(self, config: str) -> None:
        """Move the toggles to `config` and redraw once."""
        cfg = self.state.select(config)
        self._syncing = True
        try:
            for t, m in zip(self.toggles, cfg):
                t.value = m
        finally:
            self._syncing = False
        self.refresh()

    def _shown_errors(self) -> Any:
        """Context for a callback: in a kernel, an exception is shown as a traceback in `log` (inside the
        widget) instead of going to JupyterLab's log console; without one (tests) it propagates."""
        import contextlib

        return self.log if self.log is not None else contextlib.nullcontext()

    def on_toggle(self, _change: Any = None) -> None:
        if self._syncing:
            return
        with self._shown_errors():
            self.state.select(self.config)
            self.refresh()

    def on_pin(self, _button: Any = None) -> None:
        with self._shown_errors():
            self.state.pin()
            self.refresh()

    def on_unpin(self, _button: Any = None) -> None:
        with self._shown_errors():
            self.state.unpin()
            self.refresh()

    def on_budget(self, change: Any = None) -> None:
        with self._shown_errors():
            value = float(change["new"]) if isinstance(change, Mapping) else float(self.budget.value)
            pick = self.state.apply_budget(value)
            self.budget_label.value = f"<i>budget {value:.2f} ms: {pick.reason}</i>"
            if pick.config is not None:
                self.set_config(pick.config)


def build_widget(state: BranchState) -> BranchUI:
    """ToggleButtons per PTA block (Heavy / Light / Both), Pin / Unpin, a latency-budget slider, and an
    output area (comparison table + sample faces). Works without a browser (papermill, tests)."""
    import ipywidgets as w

    n = len(state.model.pta_blocks) if state.model is not None else len(state.current)
    options = [(MODE_NAMES[m], m) for m in MODES]
    toggles = [w.ToggleButtons(options=options, value=state.current[i], description=f"PTA block {i + 1}",
                               style={"button_width": "70px"}) for i in range(n)]
    lat = [float(r["latency_ms"]) for c, r in state.reports.items() if c != REFERENCE]
    lo, hi = min(lat), max(lat)
    span = max(hi - lo, 0.05 * hi, 1e-3)
    budget = w.FloatSlider(value=round(hi + 0.05 * span, 3), min=round(max(lo - 0.25 * span, 0.0), 3),
                           max=round(hi + 0.25 * span, 3), step=round(span / 100, 4) or 1e-3,
                           description="budget (ms)", continuous_update=False, readout_format=".2f",
                           style={"description_width": "initial"}, layout=w.Layout(width="520px"))
    ui = BranchUI(state=state, root=None, toggles=toggles,
                  pin_button=w.Button(description="Pin", tooltip="keep this configuration for comparison"),
                  unpin_button=w.Button(description="Unpin"), budget=budget,
                  budget_label=w.HTML("<i>move the budget to pick the most accurate (validation ACER) "
                                      f"configuration that fits {state.machine}</i>"),
                  table=w.HTML(), grid=w.Image(format="png"), log=w.Output())
    for t in toggles:
        t.observe(ui.on_toggle, names="value")
    ui.pin_button.on_click(ui.on_pin)
    ui.unpin_button.on_click(ui.on_unpin)
    budget.observe(ui.on_budget, names="value")
    if state.recorded:
        p = state.provenance
        where = (f"<b>recorded</b> in run {p.get('git_revision', '?')} of {p.get('run_dir', '?')} "
                 f"({LATENCY_BACKEND}), <b>not measured on this machine</b>")
        ui.note = w.HTML("<i>recorded run: no sample faces (they need notebook 01's checkpoint); "
                         "retrain with notebook 01 or <code>paperkit reproduce --only 01,05</code> for live "
                         "latencies and sample faces</i>")
        ui.note.add_class("paperkit-note")
        ui.grid.layout.display = "none"
    else:
        where = f"{LATENCY_BACKEND}, measured on this machine"
    header = w.HTML(f"<b>MobileNetV2+PTA branch configurations</b> ({state.dataset}); latency: {where}")
    for widget, cls in [(header, "paperkit-header"), (ui.pin_button, "paperkit-pin"),
                        (ui.unpin_button, "paperkit-unpin"), (budget, "paperkit-budget"),
                        (ui.budget_label, "paperkit-budget-label"), (ui.table, "paperkit-table"),
                        (ui.grid, "paperkit-grid"), (ui.log, "paperkit-log"),
                        *[(t, f"paperkit-block-{i + 1}") for i, t in enumerate(toggles)]]:
        widget.add_class(cls)
    ui.root = w.VBox([header, *toggles, w.HBox([ui.pin_button, ui.unpin_button]), budget, ui.budget_label,
                      ui.log, ui.table, *([ui.note] if ui.note is not None else []), ui.grid])
    ui.root.add_class("paperkit-branches")
    ui.refresh()
    return ui
