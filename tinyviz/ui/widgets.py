"""Widgets reused by every page: a chart with export buttons, coloured token text, encoded prompts."""

from __future__ import annotations

import functools
import html
import json
import re
import zlib
from collections.abc import Callable, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tinyviz.analysis import export
from tinyviz.data.text import VISIBLE, UnknownCharactersError, visible
from tinyviz.ui import bundle_store, loaders, state


def sentence(text) -> str:
    """A core message ('the prompt is empty; ...') as a sentence for the page."""
    text = str(text)
    if "=" in text.split(" ", 1)[0]:  # 'lr=0.0 must be ...' names a field: keep its spelling
        return text
    return text[:1].upper() + text[1:]


def toolbar_config(name: str) -> dict:
    """The chart toolbar's camera button saves an SVG named after the figure, in the browser."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "svg", "filename": export.slug(name), "scale": 2}}


def chart(fig: go.Figure, name: str, key: str, df: pd.DataFrame | None = None,
          on_select: Callable | None = None, run_config: dict | None = None, look_for: str | None = None) -> None:
    """st.plotly_chart drawn as exported (no Streamlit theme), a one-line 'what to look for', the export buttons.
    (While a run trains the Train page draws its charts as light SVGs instead: ``live_html``.)"""
    kwargs = {"on_select": on_select, "selection_mode": "points"} if on_select else {}
    st.plotly_chart(fig, key=key, theme=None, config=toolbar_config(name), **kwargs)
    if look_for:
        st.caption(f":material/visibility: **What to look for:** {look_for}")
    export_buttons(fig, df, name, key)


LIVE_SUFFIX = "_live"
# The light element: it sets our HTML (an SVG, a row of numbers) as the inner HTML of one div, only when it
# changed (st.markdown ran it through Markdown and turned it into React elements at every refresh), and reports
# a click on an element with data-click (its value, JSON) as the trigger 'clicked'.
# With a feed (tinyviz.ui.live_feed) the elements of a page share one stream per feed URL (server-sent events,
# open while the tab is visible): each answer, {"parts": {name: html}, "ended": bool, "version": x}, swaps each
# element's part when it changed, without a Streamlit rerun. The server pushes only what changed, every `every`
# ms at most. A "lead" element (one per fragment) asks Streamlit to rerun its fragment (the trigger 'refresh')
# when the run ended, when the feed's version moved (at most once per `lead` ms), or, when the feed cannot be
# reached (a page opened from another machine), every `lead` ms: the fragment's rerun draws it all from the
# server, as a timer fragment would. A stream rather than a fetch every `every` ms: a fetch costs Chromium more
# CPU than the redraw it brings, CPU a training beside it loses (docs/performance.md).
_LIVE_JS = """
function feeds() { return window.tinyvizFeeds || (window.tinyvizFeeds = new Map()); }
function rerun(box, why) {
  const now = Date.now();
  if (why === 'ended' || now - (box.tinyvizAsked || 0) >= box.tinyvizLead) {
    box.tinyvizAsked = now;
    box.tinyvizTrigger('refresh', why + ' ' + now);
  }
}
// The feed listens on this machine's loopback: a page opened under another address (from another machine, or
// a LAN name) does not ask for it (the browser could refuse it, or ask the person for a permission).
const LOOPBACK = ['localhost', '127.0.0.1', '[::1]', '::1'];
function leads(feed) { return [...feed.boxes].filter((box) => box.tinyvizLead); }
function disconnect(feed) { if (feed.source) { feed.source.close(); feed.source = null; } }
function stop(url, feed) { disconnect(feed); clearInterval(feed.timer); feeds().delete(url); }
function showing(url, feed) {  // the elements still showing this feed; none left: stop
  for (const box of [...feed.boxes]) if (!box.isConnected || box.tinyvizFeed !== url) feed.boxes.delete(box);
  if (!feed.boxes.size) stop(url, feed);
  return feed.boxes.size > 0;
}
function show(url, feed, answer) {
  if (!showing(url, feed)) return;
  if (!answer || !answer.parts) { leads(feed).forEach((box) => rerun(box, 'unreachable')); return; }
  for (const box of feed.boxes) {
    const part = answer.parts[box.tinyvizPart];
    if (part !== undefined && part !== box.tinyvizShown) { box.innerHTML = part; box.tinyvizShown = part; }
  }
  if (answer.ended) {
    stop(url, feed);
    leads(feed).forEach((box) => rerun(box, 'ended'));
  } else {
    leads(feed).filter((box) => answer.version !== undefined && answer.version !== box.tinyvizVersion)
               .forEach((box) => rerun(box, 'version'));
  }
}
function connect(url, feed) {  // the stream, on a page opened on this machine, while the tab is visible
  if (feed.source || document.hidden || !LOOPBACK.includes(window.location.hostname)) return;
  const source = new EventSource(url + '?stream=' + feed.every);
  source.onmessage = (event) => {
    let answer = null;
    try { answer = JSON.parse(event.data); } catch (e) { answer = null; }
    show(url, feed, answer);
  };
  feed.source = source;
}
function watch(url, feed) {  // every `every` ms: the stream open while the tab is visible, a rerun while it fails
  if (!showing(url, feed)) return;
  if (document.hidden) { disconnect(feed); return; }
  connect(url, feed);
  if (!feed.source || feed.source.readyState !== EventSource.OPEN) {
    leads(feed).forEach((box) => rerun(box, 'unreachable'));
  }
}
export default function(component) {
  const { data, parentElement, setTriggerValue } = component;
  let box = parentElement.querySelector(':scope > .tinyviz-live');
  if (!box) {
    box = document.createElement('div');
    box.className = 'tinyviz-live';
    parentElement.appendChild(box);
    box.addEventListener('click', (event) => {
      const target = event.target.closest('[data-click]');
      if (target && box.tinyvizTrigger) box.tinyvizTrigger('clicked', target.getAttribute('data-click'));
    });
  }
  box.tinyvizTrigger = setTriggerValue;
  const live = (data && typeof data === 'object') ? data : { html: data };
  if (box.tinyvizData !== live.html) {  // drawn anew by the server: newer than what the feed last gave
    box.innerHTML = live.html;
    box.tinyvizData = live.html;
    box.tinyvizShown = live.html;
  }
  box.tinyvizFeed = live.feed || null;
  box.tinyvizPart = live.part;
  box.tinyvizLead = live.lead || 0;
  box.tinyvizVersion = live.version;
  if (live.feed) {
    let feed = feeds().get(live.feed);
    if (!feed) {
      feed = { boxes: new Set(), source: null, every: live.every };
      feed.timer = setInterval(() => watch(live.feed, feed), live.every);
      feeds().set(live.feed, feed);
    }
    feed.boxes.add(box);
    connect(live.feed, feed);
  }
}
"""


@functools.cache
def _live_element():
    return st.components.v2.component("tinyviz_live_svg", js=_LIVE_JS, isolate_styles=False)


def live_html(markup: str, key: str, feed: dict | None = None, part: str | None = None, lead_s: float = 0,
              on_click: Callable | None = None) -> None:
    """Our own HTML (every text in it escaped by its maker) in the page, kept up to date from a live feed:
    ``feed`` is {"url": ..., "every_s": ..., "version": ...} (see live_feed), ``part`` the name of this element's
    HTML in the feed's answer. An element with ``lead_s`` asks Streamlit to rerun its fragment when the feed says
    the run ended or its version moved (at most once per lead_s), or every lead_s while the feed cannot be
    reached. Without a feed it is drawn as it is."""
    data = markup
    if feed is not None:
        data = {"html": markup, "feed": feed["url"], "every": int(feed["every_s"] * 1000), "part": part,
                "lead": int(lead_s * 1000), "version": feed.get("version")}
    _live_element()(key=key, data=data, on_clicked_change=on_click or (lambda: None),
                    on_refresh_change=lambda: None)


def selection(key: str):
    """A chart's selection event: Plotly's, or a click on its light SVG in the same form
    ({"selection": {"points": [{"customdata": ...}]}})."""
    live = st.session_state.get(f"{key}{LIVE_SUFFIX}")
    clicked = live.get("clicked") if isinstance(live, dict) else getattr(live, "clicked", None)
    if clicked:
        return {"selection": {"points": [{"customdata": json.loads(clicked)}]}}
    return st.session_state.get(key)


def export_buttons(fig: go.Figure, df: pd.DataFrame | None, name: str, key: str) -> None:
    """PNG / SVG / HTML / CSV downloads (made only when clicked) and 'add to the write-up bundle'."""
    stem = export.slug(name)
    frame = (lambda: df) if df is not None else (lambda: export.figure_frame(fig))
    files = [("html", "HTML", "text/html", lambda: export.to_html(fig), "self-contained, works offline"),
             ("csv", "CSV", "text/csv", lambda: export.to_csv(frame()), "the figure's data")]
    if export.image_export_available():
        files[:0] = [(fmt, fmt.upper(), mime, lambda f=fmt: export.to_image(fig, f), "rendered with kaleido")
                     for fmt, mime in (("png", "image/png"), ("svg", "image/svg+xml"))]
    with st.container(horizontal=True, gap="small", key=f"export_{key}"):
        for fmt, label, mime, make, tip in files:
            st.download_button(label, data=make, file_name=f"{stem}.{fmt}", mime=mime, key=f"export_{key}_{fmt}",
                               on_click="ignore", icon=":material/download:", type="tertiary", help=tip)
        in_bundle = name in state.get(state.BUNDLE, {})
        st.button("In bundle" if in_bundle else "Bundle", key=f"export_{key}_bundle", disabled=in_bundle,
                  icon=":material/check:" if in_bundle else ":material/add:", type="tertiary",
                  on_click=_add_to_bundle, args=(name, fig, df), help="collect it for the write-up bundle (sidebar)")
    if not export.image_export_available():
        st.caption(export.NO_BROWSER)


def smoothing(key: str, container=st) -> float:
    """The loss chart's EMA slider (0 = raw); the raw curve stays faint behind the smoothed one."""
    state.default(key, 0.6)
    return container.slider("Smoothing (EMA)", 0.0, 0.99, step=0.01, key=key, persist_state="session",
                            help="exponential moving average of the train loss; the raw curve stays faint behind it")


def _add_to_bundle(name: str, fig: go.Figure, df: pd.DataFrame | None) -> None:
    bundle_store.add(name, fig, df)  # on disk too, so the bundle survives a reload
    bundle = dict(state.get(state.BUNDLE, {}))
    bundle[name] = (fig, df)
    state.put(state.BUNDLE, bundle)
    state.put(state.BUNDLE_ZIP, None)


def _shaded_html(labels: Sequence[str], shades: Sequence[tuple[tuple[int, int, int], float]],
                 tips: Sequence[str], highlight: int | None = None) -> str:
    """Tokens as spans on a background of (rgb, alpha) each, a tooltip each; a token ending in ⏎ also
    breaks the line; token `highlight` is outlined (the one a chart below explains)."""
    spans = []
    for i, (label, ((r, g, b), alpha), tip) in enumerate(zip(labels, shades, tips)):
        ink = "#fff" if alpha > 0.6 else "inherit"
        ring = "outline: 2px solid #0072B2; outline-offset: 1px; " if i == highlight else ""
        mark = ' data-highlight="true"' if i == highlight else ""
        spans.append(f'<span title="{html.escape(tip)}"{mark} style="{ring}background: rgba({r},{g},{b},{alpha:.2f}); '
                     f'color: {ink}; border-radius: 2px; white-space: pre-wrap">{html.escape(label)}</span>')
        if label.endswith(VISIBLE["\n"]):
            spans.append("<br>")
    # overflow-wrap: a run of tokens without spaces (char models, word-level vocabularies) wraps at the box's edge
    style = "line-height: 1.8; font-size: 16px; font-family: monospace; overflow-wrap: anywhere"
    return f'<div style="{style}">{"".join(spans)}</div>'


def token_html(labels: Sequence[str], values: Sequence[float | None], tips: Sequence[str],
               rgb: tuple[int, int, int], vmax: float = 1.0, highlight: int | None = None) -> str:
    """Tokens as spans shaded by value/vmax in colour rgb (none when the value is None), a tooltip each;
    a token ending in ⏎ also breaks the line."""
    alphas = [0.0 if v is None else 0.9 * max(0.0, min(1.0, v / vmax)) for v in values]
    return _shaded_html(labels, [(rgb, a) for a in alphas], tips, highlight)


def signed_token_html(labels: Sequence[str], values: Sequence[float | None], tips: Sequence[str],
                      vmax: float | None = None) -> str:
    """Tokens shaded green where the value is negative (better), red where positive (worse), by |value|/vmax
    (default: the largest magnitude); unshaded for None. A token ending in ⏎ also breaks the line."""
    vmax = vmax or max([abs(v) for v in values if v is not None] + [1e-6])
    shades = [((44, 160, 44) if v is not None and v < 0 else (214, 39, 40),
               0.0 if v is None else 0.9 * min(1.0, abs(v) / vmax)) for v in values]
    return _shaded_html(labels, shades, tips)


def change_tokens(tokenizer, ids: list[int], change) -> tuple[list[str], list[float | None], list[str]]:
    """(labels, loss change per token, tooltips) for painting a loss difference on the text; the first token
    has none."""
    labels = [visible(tokenizer.decode([i]), spaces=False) for i in ids]
    values = [None] + [float(x) for x in change]
    tips = ["first token: nothing predicts it"] + [f"loss {float(change[j - 1]):+.2f} nats" for j in range(1, len(ids))]
    return labels, values, tips


def sample_tokens(tokenizer, result) -> tuple[list[str], list[float | None], list[str]]:
    """(labels, probabilities, tooltips) of a SampleResult: the prompt's tokens unshaded, then each step."""
    prompt_ids = tokenizer.encode(result.prompt) if result.prompt else []
    labels = [visible(tokenizer.decode([i]), spaces=False) for i in prompt_ids]
    values: list[float | None] = [None] * len(labels)
    tips = ["prompt"] * len(labels)
    for n, step in enumerate(result.steps):
        # a token that prints nothing (llama2.c's <s> that ends a sample, a lone byte) shows its piece instead
        labels.append(visible(step.text, spaces=False) or tokenizer.token_str(step.token))
        values.append(step.prob)
        tips.append(f"token {n + 1}: p={step.prob:.3f}")
    return labels, values, tips


PILL_TOKENS = 256  # a longer prompt picks its token on a slider: that many buttons no longer read as text
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def token_picker(label: str, tokens: Sequence[str], key: str, default: int, help: str | None = None) -> int:
    """One token of a prompt, picked by clicking it: the prompt's tokens as a row of buttons (a slider over
    the positions for a prompt longer than PILL_TOKENS). The position is kept in `key` (a plain state key),
    so it survives an edit of the prompt (clamped to the new length); the widget's own key changes with
    the tokens, so a new prompt draws a fresh picker."""
    n = len(tokens)
    pos = state.get(key)
    pos = default if pos is None else min(max(0, int(pos)), n - 1)
    state.put(key, pos)
    wkey = f"{key}_picker_{zlib.crc32(chr(10).join(tokens).encode()):08x}"
    st.session_state[wkey] = pos

    def picked() -> None:
        if st.session_state.get(wkey) is not None:  # clicking the picked token again un-picks it: keep it
            state.put(key, st.session_state[wkey])

    if n <= PILL_TOKENS:
        # the browser names a pick by its label, so a repeated token would pick its last copy: each copy
        # gets a different number of zero-width spaces after it (invisible) to keep every label unique
        seen: dict[str, int] = {}
        labels = []
        for t in tokens:
            seen[t] = seen.get(t, -1) + 1
            labels.append(_MARKDOWN.sub(r"\\\1", t) + "\u200b" * seen[t])
        st.pills(label, list(range(n)), key=wkey, on_change=picked, help=help, format_func=labels.__getitem__)
    else:
        st.select_slider(label, list(range(n)), key=wkey, on_change=picked, help=help,
                         format_func=lambda i: f"{i} {tokens[i]!r}")  # unique: the position comes first
    return state.get(key)


def encode_or_error(tokenizer, prompt: str, n_ctx: int) -> list[int] | None:
    """The prompt's token ids (its last n_ctx when longer), or None after st.error says what is wrong."""
    if not prompt:
        st.error("The prompt is empty; type at least two characters.")
        return None
    try:
        ids = tokenizer.encode(prompt)
    except UnknownCharactersError as e:
        st.error(f"{sentence(e)} (This model knows the {tokenizer.vocab_size} tokens of its training text.)")
        return None
    if len(ids) > n_ctx:
        st.info(f"The prompt has {len(ids)} tokens but the model sees at most n_ctx={n_ctx}; "
                f"only its last {n_ctx} tokens are shown.")
        ids = ids[-n_ctx:]
    return ids


def run_caption(run, shown: int | None = None) -> None:
    """One line naming the run; `shown` is the step whose weights the page shows (the sidebar's step
    control), said when it is not the run's latest."""
    s = run.summary()
    name = loaders.display_label(str(run.path))  # 'ablate-residual / full-seed0' for a run of an ablation
    at = (f"weights at step **{shown}** (trained to {s['step']} of {s['steps']})"
          if shown is not None and shown != s["step"] else f"step {s['step']} of {s['steps']}")
    st.caption(f"Run **{name}** · {s['model']} · {at} · corpus {s['corpus']}")
