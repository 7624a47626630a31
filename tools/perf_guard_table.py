"""The performance guard's table (tools/perf_guard.sh compare): reads each round's `engines`
output and three-player summary of both builds and prints one Markdown table, each figure with
every round's value and the ratio of the candidate's median to the baseline's.

    python3 tools/perf_guard_table.py BASE_COMMIT NEW_COMMIT LOG_DIR ROUNDS
"""

import json
import re
import statistics
import sys

CIFAR = "MobileNetV2 CIFAR"
IMAGENET = "MobileNetV2 ImageNet"
E2E = "this crate, end-to-end in Bevy (to PredictionReady)"
GPU = "this crate, GPU time (timestamps)"
HANDOVER = "readback to main world"

# (label, where the value comes from, unit)
FIGURES = [
    ("idle frame, with the plugin", ("idle", r"idle frame of the headless Bevy app: ([\d.]+) ms"), "ms"),
    ("idle frame, Bevy alone", ("idle", r"idle frame of Bevy alone[^:]*: ([\d.]+) ms"), "ms"),
    ("CIFAR b1 end to end", ("cell", CIFAR, 1, E2E), "ms"),
    ("CIFAR b1 readback to main world", ("cell", CIFAR, 1, HANDOVER), "ms"),
    ("CIFAR b1 GPU time", ("cell", CIFAR, 1, GPU), "ms"),
    ("ImageNet b1 end to end", ("cell", IMAGENET, 1, E2E), "ms"),
    ("ImageNet b64 GPU time", ("cell", IMAGENET, 64, GPU), "ms"),
    ("ImageNet b64 end to end", ("cell", IMAGENET, 64, E2E), "ms"),
    ("three players, median", ("p2p", "median_ms"), "ms"),
    ("three players, p95", ("p2p", "p95_ms"), "ms"),
    ("three players, bytes per request", ("p2p", "bytes_per_request"), "B"),
    ("three players, placement re-plans", ("p2p", "replans"), ""),
    ("three players, lost or mismatched", ("p2p", "bad"), ""),
]


def engines_rows(text):
    """The engines table as {(model, batch): {column: cell}}."""
    header, rows = None, {}
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "model":
            header = cells
        elif header and len(cells) >= 2 and cells[1].isdigit():
            row = {}
            for name, cell in zip(header, cells):
                row.setdefault(name, cell)  # a repeated column name keeps its first cell
            rows[(cells[0], int(cells[1]))] = row
    return rows


def p2p_summary(text):
    summary = None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "summary":
                summary = event
    return summary


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def value(source, engines_text, rows, summary):
    kind = source[0]
    if kind == "idle":
        m = re.search(source[1], engines_text)
        return float(m.group(1)) if m else None
    if kind == "cell":
        _, model, batch, column = source
        row = next((r for (name, b), r in rows.items() if model in name and b == batch), None)
        text = (row or {}).get(column, "")
        # A batch's cell rounds its time to 0.1 ms but gives its rate in whole images per second.
        rate = re.search(r"\((\d+) img/s\)", text)
        if rate and batch > 1:
            return batch * 1e3 / float(rate.group(1))
        m = re.match(r"([\d.]+) ms", text)
        return float(m.group(1)) if m else None
    if summary is None:
        return None
    if source[1] == "bad":
        return summary["lost"] + summary["requests"] - summary["matches_single_peer"]
    return summary.get(source[1])


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.2f}" if v >= 10 else f"{v:.3f}"
    return f"{v:,.0f}" if isinstance(v, float) else f"{v:,}"


def main():
    base_commit, new_commit, logs, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    values = {}
    for build in ("base", "new"):
        for r in range(1, rounds + 1):
            engines_text = read(f"{logs}/{build}.{r}.engines")
            rows = engines_rows(engines_text)
            summary = p2p_summary(read(f"{logs}/{build}.{r}.p2p"))
            for label, source, _ in FIGURES:
                values.setdefault((label, build), []).append(value(source, engines_text, rows, summary))
    adapter = re.search(r"adapter: (.*)", read(f"{logs}/new.1.engines"))
    print(f"adapter: {adapter.group(1) if adapter else '?'}; {rounds} rounds, each the baseline then the candidate")
    print()
    print(f"| figure | {base_commit} (baseline) | {new_commit} | ratio of medians |")
    print("|---|---|---|---|")
    for label, _, unit in FIGURES:
        cells, medians = [], []
        for build in ("base", "new"):
            got = values[(label, build)]
            cells.append(" / ".join(fmt(v, unit) for v in got) + (f" {unit}" if unit and any(v is not None for v in got) else ""))
            present = [v for v in got if v is not None]
            medians.append(statistics.median(present) if present else None)
        base, new = medians
        ratio = f"{new / base:.2f}" if base and new is not None else "-"
        print(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main()
