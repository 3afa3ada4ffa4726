"""The dashboard's charts: SVG rendered on the server by pygal (no script: pygal's tooltip
script, loaded from a CDN by default, is switched off), embedded as data: images (the
console's CSP allows img-src data:), each beside a table of the same numbers."""
from __future__ import annotations

import base64
import re

import pygal
from pygal.style import Style

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
FONT = '"PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif'
STYLE = Style(font_family=FONT, background="#ffffff", plot_background="#ffffff",
              colors=("#7a1c1c", "#d9822b", "#0b5cad", "#2f8f4e", "#8e44ad", "#52606d"),
              label_font_size=13, major_label_font_size=13, legend_font_size=13,
              value_font_size=12, title_font_size=15)


def _config(chart, empty: str) -> None:
    chart.no_data_text = empty  # what a chart without data says
    chart.js = []  # no script (and no CDN)
    chart.disable_xml_declaration = True
    chart.legend_at_bottom = True
    chart.legend_at_bottom_columns = 3
    chart.print_values = False
    chart.width, chart.height = 640, 360
    chart.explicit_size = False  # scales to its box: readable on a phone


def _data_uri(chart) -> str:
    # pygal always writes its config as an inline <script> (for its tooltips): not needed
    # for a picture, and never run in an <img> anyway.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def stacked_bars(x_labels: list[str], series: dict[str, list[int]], *,
                 empty: str = "") -> str:
    chart = pygal.StackedBar(style=STYLE, show_legend=bool(series))
    _config(chart, empty)
    chart.x_labels = x_labels
    for name, values in series.items():
        chart.add(name, values)
    return _data_uri(chart)


def bars(x_labels: list[str], series: dict[str, list[int | float | None]],
         *, horizontal: bool = False, empty: str = "") -> str:
    chart = (pygal.HorizontalBar if horizontal else pygal.Bar)(style=STYLE)
    _config(chart, empty)
    chart.x_labels = x_labels
    for name, values in series.items():
        chart.add(name, values)
    return _data_uri(chart)


def lines(x_labels: list[str], series: dict[str, list[int]], *, empty: str = "") -> str:
    chart = pygal.Line(style=STYLE, x_label_rotation=45, show_minor_x_labels=False)
    _config(chart, empty)
    chart.x_labels = x_labels
    chart.x_labels_major_every = 2
    for name, values in series.items():
        chart.add(name, values)
    return _data_uri(chart)
