"""A timed run rendered for people: the stage table, one row per node's chain, and the
markdown summary published as the run's artifact (short verdict first, detail after).

Table cells are never a lone "-": the Prefect UI renders markdown in table cells, and a
lone "-" turns into a list bullet. An empty cell is "" and a missing value is "—".
"""

from __future__ import annotations

from drover.timing import RunTiming, StageTiming, format_duration

NONE = "—"


def stage_rows(run: RunTiming) -> list[dict[str, str]]:
    """One row per stage, then the total."""
    def slowest(s: StageTiming) -> str:
        if not s.slowest_node or s.slowest_seconds is None:
            return NONE
        return f"{s.slowest_node} ({format_duration(s.slowest_seconds * run.scale)})"

    rows = [{"stage": s.name, "duration": format_duration(s.seconds * run.scale),
             "nodes": str(s.nodes or NONE), "slowest node": slowest(s)} for s in run.stages]
    rows.append({"stage": "total", "duration": format_duration(run.total), "nodes": "",
                 "slowest node": ""})
    return rows


def node_rows(run: RunTiming) -> list[dict[str, str]]:
    """With per-node pipelines: one row per node, its chain of steps and how long it took,
    the critical node marked."""
    critical = run.critical_node()
    rows = []
    for node, steps in sorted(run.node_steps.items()):
        if not steps:
            continue
        chain = " → ".join(f"{step} {format_duration((end - start) * run.scale)}"
                           for step, start, end in steps)
        rows.append({"node": node, "steps": chain,
                     "duration": format_duration((steps[-1][2] - steps[0][1]) * run.scale),
                     "critical": "yes" if node == critical else ""})
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    head = list(rows[0])
    lines = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
    lines += [f"| {' | '.join(row[k] or ' ' for k in head)} |" for row in rows]
    return "\n".join(lines)


def summary_markdown(run: RunTiming, chart: str | None = None) -> str:
    """Verdict first, then the stages, the nodes, the critical path, where the baseline comes
    from and the clock; `chart`: the URL of the durations chart, shown as an image."""
    short, full = run.short_verdict(), run.verdict()
    rest = full[len(short):] if full.startswith(short) else f" ({full})"
    parts = [f"# {run.flow} {run.cluster}: {run.outcome}", f"**{short}**{rest}"]
    parts.append(_table(stage_rows(run)))
    nodes = node_rows(run)
    if nodes:
        parts.append("## Nodes\n\n" + _table(nodes))
    parts.append(f"Critical path: {run.critical_path()}")
    if run.baseline_seconds is not None and run.baseline_source:
        parts.append(f"Baseline: {run.baseline_source}")
    if run.clock_note:
        parts.append(f"_Times: {run.clock_note}._")
    if chart:
        parts.append(f"![{run.flow} durations over time]({chart})")
    return "\n\n".join(parts) + "\n"
