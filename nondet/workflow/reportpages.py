"""The HTML report's own pages (rule ``report_pages``, rules/report.smk): every table rendered
inline, every comparison's verdict text beside its figure, and an overview (what was run, the
headline findings) that the report's landing page (report/workflow.rst) shows.

``pages`` plans them from rule all's targets while the workflow is parsed (no pandas, no
markdown); ``write_pages`` renders them from the finished tables. Each page is one
self-contained HTML file (figures inlined as data URIs), so it reads the same opened alone."""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from nondet.workflow.runtime import get_logger, stage

FOLDER = "results/report"
OVERVIEW = f"{FOLDER}/overview.html"

#: table page name -> (Markdown table, report category, label)
TABLES = {
    "diversity": ("results/tables/diversity.md", "Diversity", "diversity table"),
    "stability": ("results/tables/stability.md", "Instability", "stability table"),
    "mitigation": ("results/tables/mitigation.md", "Mitigation", "mitigation table"),
    "ensembles": ("results/tables/ensembles.md", "Mitigation", "ensembles table"),
}


@dataclass
class Page:
    """One report page: its file, report category and label, and the files it renders."""

    name: str
    category: str
    label: str
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{FOLDER}/{self.name}.html"


def pages(targets) -> list[Page]:
    """The pages of a run whose rule all asks for ``targets`` (its table and figure files)."""
    targets = [str(t) for t in targets]
    out = [Page("overview", "Overview", "what was run", {"diversity": "results/tables/diversity.csv"})]
    for name, (md, category, label) in TABLES.items():
        csv_path = md[: -len(".md")] + ".csv"
        if csv_path in targets:
            out.append(Page(f"table_{name}", category, label, {"md": md}))
    for t in targets:
        parts = t.split("/")
        if t.startswith("results/compare/") and t.endswith("/verdict.csv"):
            folder, name, what = "results/compare", parts[2], "comparison"
        elif t.startswith("results/runs/compare/") and t.endswith("/verdict.csv"):
            folder, name, what = "results/runs/compare", parts[3], "imported runs"
        else:
            continue
        inputs = {k: f"{folder}/{name}/{f}" for k, f in (("md", "verdict.md"), ("png", "summary.png"))}
        prefix = "compare" if what == "comparison" else "runs_compare"
        out.append(Page(f"{prefix}_{name}", "Is it real?", f"{name} ({what}): verdict", inputs))
        out[0].inputs[f"verdict:{name} ({what})"] = inputs["md"]
    for t in targets:
        if t.startswith("results/factorial/") and t.endswith("/components.csv"):
            name = t.split("/")[2]
            inputs = {"csv": t, "png": f"results/factorial/{name}/components.png"}
            out.append(Page(f"factorial_{name}", "Is it real?", f"{name} (factorial): table", inputs))
    if "results/runs/all_pairs.csv" in targets:
        out.append(
            Page("runs_all_pairs", "Is it real?", "all pairs of imported groups", {"csv": "results/runs/all_pairs.csv"})
        )
    if "results/tables/mitigation.csv" in targets:
        out[0].inputs["mitigation"] = "results/tables/mitigation.csv"
    return out


def pages_from_inputs(inputs) -> list[Page]:
    """The pages again, from the files ``pages`` gave them to read (the rule's input), so the job
    needs no params listing them (they would clutter the report's job details)."""
    targets = []
    for f in map(str, inputs):
        if f.startswith("results/tables/") and f.endswith(".md"):
            targets.append(f[: -len(".md")] + ".csv")
        elif f.endswith("/verdict.md"):
            targets.append(f[: -len(".md")] + ".csv")
        elif f.endswith(".csv"):
            targets.append(f)
    return pages(targets)


STYLE = """<style>
body{font-family:system-ui,sans-serif;font-size:14px;line-height:1.4;margin:0.5em;color:#222}
table{border-collapse:collapse;margin:0.6em 0}
th,td{border:1px solid #bbb;padding:2px 7px;text-align:right;white-space:nowrap}
th{background:#eee}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;height:auto}.verdict{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.verdict>div{flex:1 1 28em;min-width:20em}
</style>"""


def _markdown(text: str) -> str:
    import markdown

    return markdown.markdown(text, extensions=["tables"])


def _csv_table(path) -> str:
    import pandas as pd

    df = pd.read_csv(path)
    return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)


def _image(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _document(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"{STYLE}</head><body>\n{body}\n</body></html>\n"
    )


def _count(rows, key="n_replicas") -> str:
    counts = sorted({int(float(r[key])) for r in rows if r.get(key, "") != ""})
    return "/".join(map(str, counts)) if counts else "?"


def overview(page: Page, run: dict) -> str:
    """What was run (from the finished tables, so imported and trained groups alike) and the
    headline findings."""
    rows = list(csv.DictReader(open(page.inputs["diversity"], newline="")))
    imported = {tuple(g) for g in run["imported"]}
    trained = [r for r in rows if (r["model"], r["condition"]) not in imported]
    runs = [r for r in rows if (r["model"], r["condition"]) in imported]
    parts = [f"<h3>What was run: experiment <code>{html.escape(run['experiment'])}</code></h3><ul>"]
    if trained:
        parts.append(
            f"<li>Trained here on <b>{html.escape(run['dataset'])}</b>, device <b>{html.escape(run['device'])}</b>:"
            + "".join(
                f" <b>{html.escape(m)}</b> ({', '.join(html.escape(r['condition']) for r in group)}; "
                f"{_count(group)} replicas each);"
                for m in dict.fromkeys(r["model"] for r in trained)
                for group in [[r for r in trained if r["model"] == m]]
            ).rstrip(";")
            + ". Each condition varies exactly one source of randomness (<code>control</code> none, "
            "<code>all</code> every source).</li>"
        )
    if runs:
        parts.append(
            "<li>Imported runs (not trained by this workflow):"
            + "".join(
                f" <b>{html.escape(r['model'])}</b>/{html.escape(r['condition'])} ({_count([r])} runs);" for r in runs
            ).rstrip(";")
            + ".</li>"
        )
    parts.append("</ul><h3>Headline findings</h3><ul>")
    for m in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == m and r.get("disagreement", "") != ""]
        if not group:
            continue
        top = max(group, key=lambda r: float(r["disagreement"]))
        parts.append(
            f"<li><b>{html.escape(m)}</b>: the largest run-to-run variability is in "
            f"<code>{html.escape(top['condition'])}</code>: SD of test accuracy "
            f"{float(top['acc_sd']):.2f} percentage points, {float(top['disagreement']):.2f} % of test "
            f"examples classified differently by two runs (mean over pairs).</li>"
        )
    if "mitigation" in page.inputs:
        mit = [r for r in csv.DictReader(open(page.inputs["mitigation"], newline="")) if r["method"] != "plain"]
        scored = [r for r in mit if r.get("variability_reduction", "") != ""]
        if scored:
            best = max(scored, key=lambda r: float(r["variability_reduction"]))
            parts.append(
                f"<li>Mitigation ({html.escape(best['model'])}/{html.escape(best['condition'])}): "
                f"<code>{html.escape(best['method'])}</code> changes the paper's 5-metric variability "
                f"by {float(best['variability_reduction']):.0f} % (positive = less variable than plain "
                "training; see the Mitigation table).</li>"
            )
    for key, path in page.inputs.items():
        if key.startswith("verdict:"):
            # the verdict's bold sentences, one per metric (nondet.analysis.inference's verdict.md)
            bold = [p for p in Path(path).read_text().split("\n\n") if p.strip().startswith("**")]
            text = "\n\n".join(bold) or Path(path).read_text()
            parts.append(f"<li>Comparison <b>{html.escape(key[len('verdict:') :])}</b>: {_markdown(text)}</li>")
    parts.append("</ul>")
    return "\n".join(parts)


def render(page: Page, run: dict) -> str:
    i = page.inputs
    if page.name == "overview":
        return overview(page, run)
    if "md" in i and "png" in i:  # a verdict beside its figure
        return (
            f'<div class="verdict"><div>{_markdown(Path(i["md"]).read_text())}</div><div>{_image(i["png"])}</div></div>'
        )
    if "md" in i:
        return _markdown(Path(i["md"]).read_text())
    body = _csv_table(i["csv"])
    return f"{_image(i['png'])}\n{body}" if "png" in i else body


@stage
def write_pages(inputs, run: dict, log_path=None) -> None:
    """Write every page planned from ``inputs`` (``pages_from_inputs``); ``run``: experiment,
    dataset, device and the imported (model, group) pairs."""
    log = get_logger(log_path)
    for page in pages_from_inputs(inputs):
        body = render(page, run)
        out = Path(page.path)
        out.parent.mkdir(parents=True, exist_ok=True)
        # the overview is included into the landing page: a fragment, not a document
        out.write_text(body if page.name == "overview" else _document(page.label, body))
        log.info(f"wrote {out} ({page.label})")
