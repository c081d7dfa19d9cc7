"""The report as HTML (one self-contained page) and Markdown, from its tables and figures."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mapping.report.figures import ReportFigure
from mapping.report.tables import TOTAL, DisplayTable, interval_text

# =========================================================================== rendering
_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2731;
max-width:1120px;margin:0 auto;padding:1.2rem 1.6rem 3rem;line-height:1.45;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .2rem;color:#12324a}
h2{font-size:1.22rem;margin:2.2rem 0 .6rem;padding-bottom:.2rem;border-bottom:2px solid #d6e2ea;color:#12324a}
h3{font-size:1.02rem;margin:1.4rem 0 .4rem;color:#23465e}
.meta{color:#5b6b78;font-size:.88rem;margin:0 0 .8rem}
nav{font-size:.9rem;background:#f3f7fa;padding:.5rem .8rem;border-radius:6px}
nav a{margin-right:1rem;color:#1f5f8b;text-decoration:none}
table{border-collapse:collapse;margin:.4rem 0 .3rem;font-size:.88rem}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3rem 0;color:#23465e}
th,td{padding:.28rem .7rem;border-bottom:1px solid #e3e9ee;vertical-align:top}
th{background:#eef3f7;text-align:left;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:600;border-top:1.5px solid #9fb3c2}
tr.count td{color:#5b6b78;font-style:italic}
.foot{font-size:.82rem;color:#5b6b78;margin:.1rem 0 1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
figure{margin:.4rem 0 1rem}
figure img{max-width:100%;height:auto;border:1px solid #e3e9ee;border-radius:4px}
figcaption{font-size:.82rem;color:#4a5a66;margin-top:.25rem}
.notes{background:#fff8e6;border-left:4px solid #e0b04a;padding:.5rem .9rem;font-size:.88rem}
pre{background:#f6f8fa;padding:.7rem;border-radius:6px;overflow:auto;font-size:.78rem;line-height:1.3}
code{font-size:.8rem;word-break:break-all}
"""


def _html_table(t: DisplayTable, total_zone: bool = True) -> str:
    e = html.escape
    num = t.numeric or [False] * len(t.header)
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{e(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th class="n">{e(h)}</th>' if n else f"<th>{e(h)}</th>" for h, n in zip(t.header, num, strict=True)
    ) + "</tr></thead><tbody>")  # fmt: skip
    for row in t.rows:
        cls = ""
        if total_zone and row and row[0] == TOTAL:
            cls = ' class="total"'
        elif row and row[0] == "profiles (n)":
            cls = ' class="count"'
        cells = "".join(
            f'<td class="n">{e(c)}</td>' if n else f"<td>{e(c)}</td>"
            for c, n in zip(row, num, strict=True)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(t: DisplayTable) -> str:
    num = t.numeric or [False] * len(t.header)

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = []
    if t.caption:
        lines += [f"*{t.caption}*", ""]
    lines.append("| " + " | ".join(esc(h) for h in t.header) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in num) + "|")
    for row in t.rows:
        cells = [f"**{esc(c)}**" if row[0] == TOTAL and c else esc(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class _Manifest:
    run: list[tuple[str, str]]
    stages: DisplayTable | None
    inputs: DisplayTable | None
    versions: DisplayTable | None
    config_text: str | None


def manifest_parts(
    manifest: Mapping[str, Any] | None, config: Mapping[str, Any] | None
) -> _Manifest:
    import yaml

    m = dict(manifest or {})
    run = [
        (k, str(m[k]))
        for k in ("run_id", "created", "updated", "config_file", "seed")
        if m.get(k) is not None
    ]
    if not any(k == "seed" for k, _ in run) and config and config.get("seed") is not None:
        run.append(("seed", str(config["seed"])))
    stages = None
    if m.get("stages"):
        rows = []
        order = sorted(m["stages"].items(), key=lambda kv: str(kv[1].get("started") or "~"))
        for name, rec in order:
            sec = rec.get("seconds")
            rows.append([name, str(rec.get("status", "")), str(rec.get("started", "")),
                         f"{float(sec):,.1f}" if sec is not None else "—",
                         str(len(rec.get("outputs", {}) or {}))])  # fmt: skip
        stages = DisplayTable(["Stage", "Status", "Started", "Seconds", "Outputs"], rows,
                        caption="Stages of the run (from the manifest).",
                        numeric=[False, False, False, True, True])  # fmt: skip
    inputs = None
    if m.get("inputs"):
        inputs = DisplayTable(["Input", "Checksum"], [[k, str(v)] for k, v in sorted(m["inputs"].items())],
                        caption="Input files and their checksums.", numeric=[False, False])  # fmt: skip
    versions = None
    if m.get("versions"):
        versions = DisplayTable(["Package", "Version"], [[k, str(v)] for k, v in sorted(m["versions"].items())],
                          caption="Package versions.", numeric=[False, False])  # fmt: skip
    cfg = config if config is not None else m.get("config")
    text = (
        yaml.safe_dump(
            json.loads(json.dumps(cfg, default=str)), sort_keys=False, allow_unicode=True
        )
        if cfg
        else None
    )
    return _Manifest(run, stages, inputs, versions, text)


def _img(fig: ReportFigure) -> str:
    b64 = base64.b64encode(fig.data).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")  # fmt: skip


@dataclass
class ReportContent:
    title: str
    subtitle: str
    t1: DisplayTable | None
    t2: DisplayTable | None
    t_independent: DisplayTable | None
    cv: DisplayTable | None
    figures: list[ReportFigure]
    manifest: _Manifest
    notes: list[str]
    map_intervals: list[str]
    t_thaw: DisplayTable | None = None
    cv_area: DisplayTable | None = None


def render_html(c: ReportContent) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(c.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(c.title)}</h1>",
        f'<p class="meta">{e(c.subtitle)}</p>',
        '<nav><a href="#tables">Tables</a><a href="#maps">Maps</a><a href="#storage">Storage</a>'
        '<a href="#cv">Cross-validation</a><a href="#manifest">Run manifest</a></nav>',
    ]
    if c.notes:
        parts.append('<div class="notes"><strong>Notes</strong><ul>')
        parts += [f"<li>{e(n)}</li>" for n in c.notes]
        parts.append("</ul></div>")
    parts.append('<h2 id="tables">Inventory tables</h2>')
    if c.t1 is None:
        parts.append("<p>No zone totals in this run.</p>")
    else:
        parts.append(_html_table(c.t1))
        if c.t1.foot:
            parts.append(f'<p class="foot">{e(c.t1.foot)}</p>')
        assert c.t2 is not None
        parts.append(_html_table(c.t2))
        if c.t2.foot:
            parts.append(f'<p class="foot">{e(c.t2.foot)}</p>')
        if c.t_independent is not None:
            parts.append(_html_table(c.t_independent))
    if c.t_thaw is not None:
        parts.append(_html_table(c.t_thaw))
    parts.append('<h2 id="maps">Maps</h2>')
    maps = [f for f in c.figures if f.section == "maps"]
    if not maps:
        parts.append("<p>No maps in this run.</p>")
    for iv in c.map_intervals:
        figs = [f for f in maps if f.interval == iv]
        if figs:
            parts.append(f'<h3>{e(interval_text(iv))}</h3><div class="grid">')
            parts += [_img(f) for f in figs]
            parts.append("</div>")
    parts.append('<h2 id="storage">Storage per zone</h2>')
    store = [f for f in c.figures if f.section == "storage"]
    parts += [_img(f) for f in store] or ["<p>No zone totals in this run.</p>"]
    parts.append('<h2 id="cv">Cross-validation</h2>')
    if c.cv is not None:
        parts.append(_html_table(c.cv, total_zone=False))
    if c.cv_area is not None:
        parts.append(_html_table(c.cv_area, total_zone=False))
    cvf = [f for f in c.figures if f.section == "cv"]
    if cvf:
        parts.append('<div class="grid">' + "".join(_img(f) for f in cvf) + "</div>")
    if c.cv is None and not cvf:
        parts.append("<p>No cross-validation results in this run.</p>")
    parts.append('<h2 id="manifest">Run manifest</h2>')
    m = c.manifest
    if m.run:
        parts.append(
            _html_table(
                DisplayTable(["Run", ""], [[k, v] for k, v in m.run], numeric=[False, False]), False
            )
        )
    for t in (m.stages, m.inputs, m.versions):
        if t is not None:
            parts.append(_html_table(t, total_zone=False))
    if m.config_text:
        parts.append(f"<h3>Config</h3><pre>{e(m.config_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(c: ReportContent) -> str:
    out = [f"# {c.title}", "", c.subtitle, ""]
    if c.notes:
        out += ["**Notes**", ""] + [f"- {n}" for n in c.notes] + [""]
    out += ["## Inventory tables", ""]
    if c.t1 is None:
        out += ["No zone totals in this run.", ""]
    else:
        out += [_md_table(c.t1), ""]
        if c.t1.foot:
            out += [c.t1.foot, ""]
        assert c.t2 is not None
        out += [_md_table(c.t2), ""]
        if c.t2.foot:
            out += [c.t2.foot, ""]
        if c.t_independent is not None:
            out += [_md_table(c.t_independent), ""]
    if c.t_thaw is not None:
        out += [_md_table(c.t_thaw), ""]
    out += ["## Maps", ""]
    maps = [f for f in c.figures if f.section == "maps"]
    if not maps:
        out += ["No maps in this run.", ""]
    for iv in c.map_intervals:
        figs = [f for f in maps if f.interval == iv]
        if figs:
            out += [f"### {interval_text(iv)}", ""]
            for f in figs:
                out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    out += ["## Storage per zone", ""]
    for f in (f for f in c.figures if f.section == "storage"):
        out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    out += ["## Cross-validation", ""]
    if c.cv is not None:
        out += [_md_table(c.cv), ""]
    if c.cv_area is not None:
        out += [_md_table(c.cv_area), ""]
    for f in (f for f in c.figures if f.section == "cv"):
        out += [f"![{f.caption}](figures/{f.name})", ""]
    out += ["## Run manifest", ""]
    m = c.manifest
    out += [f"- **{k}**: `{v}`" for k, v in m.run] + [""]
    for t in (m.stages, m.inputs, m.versions):
        if t is not None:
            out += [_md_table(t), ""]
    if m.config_text:
        out += ["### Config", "", "```yaml", m.config_text.rstrip(), "```", ""]
    return "\n".join(out)
