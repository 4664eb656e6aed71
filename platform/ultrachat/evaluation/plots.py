"""The evaluation report's pictures (PNG under output_dir/plots/), drawn from results.json only."""

from __future__ import annotations

from ultrachat.stats.plots import save_png

_COLORS = {"win": "#4c9a5a", "tie": "#b8b8b8", "lose": "#c8553d"}


def draw_plots(output_dir: str, results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for number, (name, pair) in enumerate(results.get("pairwise", {}).items(), 1):
        rows = [("overall", pair["overall"])] + [(k, v) for k, v in pair["per_class"].items() if v["n"]]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
        labels = [f"{label} (n={r['n']})" for label, r in rows]
        left = [0.0] * len(rows)
        for part in ("win", "tie", "lose"):
            values = [r[part] or 0 for _, r in rows]
            ax.barh(labels, values, left=left, color=_COLORS[part], label=f"{pair['a']} {part}s" if part != "tie" else "ties")
            left = [a + b for a, b in zip(left, values)]
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of prompts (ties include verdicts that flipped with the answer order)")
        ax.set_title(f"{name}: win / tie / lose per class")
        ax.legend(loc="lower right", fontsize=8)
        paths.append(save_png(fig, output_dir, f"pairwise-{number}.png"))
    singles = results.get("single", {})
    if singles:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        width = 0.8 / max(1, len(singles))
        for index, (name, single) in enumerate(singles.items()):
            histogram = single["overall"]["histogram"]
            xs = [float(k) + (index - (len(singles) - 1) / 2) * width for k in histogram]
            ax.bar(xs, list(histogram.values()), width=width, label=f"{name} (mean {single['overall']['mean'] or 0:.2f})")
        ax.set_xticks(range(1, 11))
        ax.set_xlabel("judge's score (1-10)")
        ax.set_ylabel("answers")
        ax.set_title("score distribution per candidate")
        ax.legend(fontsize=8)
        paths.append(save_png(fig, output_dir, "scores.png"))
    lengths = {name: c["length_words"] for name, c in results["candidates"].items() if c["length_words"]["n"]}
    if lengths:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(lengths) + 1.4))
        for row, (name, d) in enumerate(lengths.items()):
            ax.plot([d["p10"], d["p90"]], [row, row], color="#555", linewidth=2)
            ax.plot([d["p50"]], [row], "o", color="#333")
            ax.plot([d["mean"]], [row], "x", color="#c8553d")
        ax.set_yticks(range(len(lengths)), list(lengths))
        ax.set_xlabel("answer length, words (line p10-p90, o median, x mean)")
        ax.set_title("answer lengths per candidate")
        paths.append(save_png(fig, output_dir, "lengths.png"))
    return paths
