"""The live panel's numbers as HTML (progress, metrics, health, sample preview, the sidebar's status line).

While a run trains they are drawn by widgets.live_html and refreshed from tinyviz.ui.live_feed, outside a
Streamlit rerun, so they are plain HTML made to read like Streamlit's own elements (its font, greys and
alert colours). No Streamlit here: the feed's threads call these. Every text is escaped.
"""

from __future__ import annotations

from html import escape

TEXT, MUTED, BAR, TRACK = "rgb(49, 51, 63)", "rgba(49, 51, 63, 0.6)", "rgb(255, 75, 75)", "rgba(49, 51, 63, 0.1)"
ALERT = {"success": ("rgba(33, 195, 84, 0.1)", "rgb(23, 114, 51)", "✓"),
         "warning": ("rgba(255, 227, 18, 0.1)", "rgb(146, 108, 5)", "⚠"),
         "error": ("rgba(255, 43, 43, 0.09)", "rgb(125, 53, 59)", "✕")}


def eta(seconds) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    return f" · about {m} min {s} s left" if m else f" · about {s} s left"


def progress(step: int, total: int, eta_s=None) -> str:
    """'step N of M · about X s left' over a bar, as st.progress draws it."""
    frac = min(1.0, max(0.0, step / max(1, total)))
    return (f'<div style="color:{TEXT};font-size:0.875rem;margin-bottom:0.35rem">'
            f"step {step} of {total}{escape(eta(eta_s))}</div>"
            f'<div role="progressbar" aria-valuenow="{frac * 100:.0f}" aria-valuemin="0" aria-valuemax="100" '
            f'style="height:0.5rem;border-radius:0.5rem;background:{TRACK};overflow:hidden;margin-bottom:1rem">'
            f'<div style="width:{frac * 100:.2f}%;height:100%;background:{BAR}"></div></div>')


def metric_values(metrics: list[dict]) -> list[tuple[str, str]]:
    """(label, value) of the five numbers over the loss curve, from the latest records."""
    last = metrics[-1]
    vals = [m for m in metrics if m.get("val_loss") is not None]
    return [("Train loss", f"{last['loss']:.3f}"), ("Val loss", f"{vals[-1]['val_loss']:.3f}" if vals else "–"),
            ("Tokens/s", f"{last['tokens_per_s']:,.0f}"), ("Learning rate", f"{last['lr']:.2e}"),
            ("Grad norm", f"{last['grad_norm']:.3g}")]


def numbers(metrics: list[dict]) -> str:
    """The five numbers in a row, each a small label over a large value, as st.metric draws them."""
    cells = "".join(f'<div data-testid="tinyviz-metric" style="flex:1 1 0;min-width:7rem">'
                    f'<div style="color:{TEXT};font-size:0.875rem">{escape(label)}</div>'
                    f'<div style="color:{TEXT};font-size:2.25rem;line-height:1.3">{escape(value)}</div></div>'
                    for label, value in metric_values(metrics))
    return f'<div style="display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem">{cells}</div>'


def alert(kind: str, text: str) -> str:
    bg, fg, icon = ALERT[kind]
    return (f'<div role="alert" style="background:{bg};color:{fg};border-radius:0.5rem;padding:0.75rem 1rem;'
            f'margin-bottom:0.5rem;font-size:1rem"><span aria-hidden="true">{icon}</span>&nbsp; {escape(text)}</div>')


HEALTHY = "Health: no problems seen (loss, gradients, attention entropy, causal mask)."


def health(warnings: list) -> str:
    """health.health_checks' warnings as alert boxes, or that it saw no problem."""
    if not warnings:
        return alert("success", HEALTHY)
    return "".join(alert("error" if w.severity == "error" else "warning", f"Step {w.step}: {w.message}")
                   for w in warnings)


def sample(metrics: list[dict]) -> str:
    """The latest greedy sample preview, or nothing before the first one."""
    samples = [r for r in metrics if (r.get("extra") or {}).get("sample")]
    if not samples:
        return ""
    last = samples[-1]
    return (f'<p style="color:{TEXT};margin:0 0 0.5rem"><strong>Sample preview</strong> (greedy, step {last["step"]})'
            f'</p><pre style="white-space:pre-wrap;word-break:break-word;background:rgb(240, 242, 246);'
            f'border-radius:0.5rem;padding:1rem;font-size:0.875rem;color:{TEXT};margin-bottom:1rem">'
            f'{escape(last["extra"]["sample"])}</pre>')


def caption(text: str) -> str:
    """A line in the small grey type of st.caption."""
    return f'<div style="color:{MUTED};font-size:0.875rem;margin-bottom:0.5rem">{escape(text)}</div>'
