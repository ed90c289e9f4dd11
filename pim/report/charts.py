"""Pictures inside the page: the analyses' PNG figures as data URIs (re-encoded or shrunk when large), and
small inline SVG charts drawn here (the suppressed share per layer, a neuron's activation probabilities)."""
import base64
import io
import math
from pathlib import Path

from pim.report.html import esc

MAX_PNG_BYTES = 300_000  # a figure larger than this is re-encoded with a 256-colour palette, then shrunk
MAX_WIDTH = 1600  # figures wider than this (pixels) are scaled down to it
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # matplotlib's tab10, as the PNG figures use


def png_bytes(path, max_bytes=MAX_PNG_BYTES, max_width=MAX_WIDTH):
    """The PNG at path, as is when small enough; else re-encoded (palette, then scaled down by halves of
    what is left) until it fits max_bytes or is 400 pixels wide."""
    data = Path(path).read_bytes()
    from PIL import Image  # matplotlib's own dependency

    with Image.open(io.BytesIO(data)) as image:
        if len(data) <= max_bytes and image.width <= max_width:
            return data
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        while True:
            out = io.BytesIO()
            image.quantize(256).save(out, format="PNG", optimize=True)
            if out.tell() <= max_bytes or image.width <= 400:
                return out.getvalue()
            image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)


def figure(path, caption, missing_hint, max_bytes=MAX_PNG_BYTES, max_width=MAX_WIDTH):
    """A figure with its caption; where the file is absent (or unreadable) a note naming it and what makes it."""
    path = Path(path)
    if not path.is_file():
        return f'<p class="note">no figure {esc(path)}: {esc(missing_hint)}</p>'
    try:
        data = png_bytes(path, max_bytes, max_width)
    except (OSError, ValueError) as e:
        return f'<p class="error">{esc(path)}: not a readable PNG ({esc(e)})</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="{uri}"><figcaption>{esc(caption)} '
            f'<code>{esc(path.name)}</code></figcaption></figure>')


def tick_step(span, ticks=5):
    """(step, decimals) of about `ticks` round ticks over span: 1, 2 or 5 times a power of ten."""
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step, max(0, -math.floor(math.log10(step)))


def line_chart(series, labels, y_label, width=900, height=300, zero=False, colours=COLOURS):
    """An SVG line chart of series [[y per x], ...] (x = 0, 1, ...), one line and legend entry per label;
    None values are gaps; zero: the y axis includes 0, drawn as a grey line."""
    values = [v for s in series for v in s if v is not None] + ([0.0] if zero else [])
    if not values:
        return ""
    left, right, top, bottom = 60, 130, 12, 36
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    n = max(len(s) for s in series)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i):
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v):
        return top + plot_h * (hi - v) / (hi - lo)

    parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>']
    step, decimals = tick_step(hi - lo)
    for k in range(math.ceil(lo / step), math.floor(hi / step) + 1):
        v = k * step
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.{decimals}f}</text>')
    if zero:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#888"/>')
    step = max(1, round(n / 20))
    for i in range(0, n, step):
        parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 14}" text-anchor="middle">{i}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">layer</text>'
                 f'<text transform="translate(12 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>')
    for k, (s, label) in enumerate(zip(series, labels)):
        colour = colours[k % len(colours)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{points}"/>')
        parts += [f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.2" fill="{colour}"><title>{esc(label)}, layer {i}: '
                  f'{v:.4f}</title></circle>' for i, v in enumerate(s) if v is not None]
        ly = top + 14 + 16 * k
        parts.append(f'<line x1="{width - right + 10}" x2="{width - right + 28}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 32}" y="{ly}">{esc(label)}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="{esc(y_label)} per layer">' + "".join(parts) + "</svg>")


def probability_bars(probs, languages, own, bar_value, width_per=44, height=92):
    """An SVG bar chart of one neuron's activation probability per language (0 to 1); the neuron's own
    languages dark, the others light; a dashed line at bar_value (the selection's bar)."""
    top, bottom = 14, 18
    plot_h = height - top - bottom
    width = width_per * len(languages) + 8
    parts = [f'<line x1="2" x2="{width - 2}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#999"/>']
    for k, (p, lang) in enumerate(zip(probs, languages)):
        h = plot_h * max(0.0, min(1.0, p))
        x0 = 6 + k * width_per
        fill = "#1f5f99" if lang in own else "#b8c7d6"
        parts.append(f'<rect x="{x0}" y="{top + plot_h - h:.1f}" width="{width_per - 12}" height="{h:.1f}" fill="{fill}">'
                     f'<title>{esc(lang)}: {p:.4f}</title></rect>'
                     f'<text x="{x0 + (width_per - 12) / 2}" y="{top + plot_h - h - 2:.1f}" text-anchor="middle">{p:.2f}</text>'
                     f'<text x="{x0 + (width_per - 12) / 2}" y="{height - 4}" text-anchor="middle">{esc(lang)}</text>')
    if bar_value is not None:
        y = top + plot_h * (1 - bar_value)
        parts.append(f'<line x1="2" x2="{width - 2}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c62828" stroke-dasharray="3 3">'
                     f'<title>bar: p &gt; {bar_value:.4f}</title></line>')
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="activation probability per language">' + "".join(parts) + "</svg>")
