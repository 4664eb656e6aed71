"""The report's pictures (PNG under output_dir/plots/), drawn from stats.json's histograms only."""

from __future__ import annotations

import io
import posixpath

from ultrachat import storage

PLOTS_DIR = "plots"


def save_png(fig, output_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    filesystem, root = storage.filesystem_for(storage.join(output_dir, PLOTS_DIR))
    filesystem.create_dir(root, recursive=True)
    with filesystem.open_output_stream(posixpath.join(root, name)) as out:
        out.write(buffer.getvalue())
    return f"{PLOTS_DIR}/{name}"


def _binned(values: dict, width: float, limit: float) -> tuple[list[float], list[int]]:
    """Histogram dict (value -> count) re-binned to ``width`` up to ``limit`` (the rest in the last bin)."""
    bins: dict[float, int] = {}
    for value, count in values.items():
        edge = min(float(value), limit) // width * width
        bins[edge] = bins.get(edge, 0) + count
    edges = sorted(bins)
    return edges, [bins[e] for e in edges]


def draw_plots(output_dir: str, stats: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ultrachat.stats.aggregate import ROLES

    overall, paths = stats["groups"]["overall"], []
    rounds = overall["rounds_histogram"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(rounds), list(rounds.values()), color="#4c72b0")
    ax.set(title="Rounds per dialogue", xlabel="rounds (assistant replies)", ylabel="dialogues")
    paths.append(save_png(fig, output_dir, "rounds.png"))

    raw = stats["histograms"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lengths = sorted(v for role in ROLES for v in raw[f"utterance_tokens:{role}"])
    limit = max(64.0, float(lengths[int(len(lengths) * 0.99)])) if lengths else 64.0  # one scale for both roles
    for role in ROLES:
        values = raw[f"utterance_tokens:{role}"]
        if values:
            edges, counts = _binned(values, max(1.0, limit // 40), limit)
            ax.step(edges, counts, where="post", label=f"{role} (mean {overall['utterance_tokens_by_role'][role]['mean']})")
    ax.set(title="Utterance length by role", xlabel="tokens", ylabel="messages")
    ax.legend()
    paths.append(save_png(fig, output_dir, "utterance_tokens.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, label in (("mtld", "per message"), ("mtld_dialogue", "per dialogue")):
        values = raw.get(name, {})
        if values:
            edges, counts = _binned(values, 5.0, 300.0)
            total = sum(counts)
            ax.step(edges, [c / total for c in counts], where="post", label=f"{label} (n={total:,})")
    ax.set(title="MTLD distribution (values above 300 in the last bin)", xlabel="MTLD", ylabel="share")
    ax.legend()
    paths.append(save_png(fig, output_dir, "mtld.png"))

    topic = stats.get("topic") or {}
    if topic.get("histogram"):
        hist = topic["histogram"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(hist["edges"][:-1], hist["counts"], width=hist["edges"][1] - hist["edges"][0], align="edge",
               color="#55a868")
        ax.axvline(topic["mean"], color="black", linestyle="--", label=f"mean {topic['mean']:.3f}")
        ax.set(title=f"Pairwise cosine similarity ({topic['model']}, n={topic['n']:,})", xlabel="cosine",
               ylabel="pairs (random sample)")
        ax.legend()
        paths.append(save_png(fig, output_dir, "pairwise_similarity.png"))

    sectors = {k.split(":", 1)[1]: v for k, v in stats["groups"].items() if k.startswith("sector:")}
    if sectors:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
        names = sorted(sectors)
        for ax, (key, title) in zip(axes, (("avg_turns", "avg turns"), ("avg_utterance_tokens", "avg utterance tokens"),
                                            ("mtld", "MTLD (mean)"))):
            values = [sectors[s][key]["mean"] if key == "mtld" else sectors[s][key] for s in names]
            ax.bar(names, [v or 0 for v in values], color="#c44e52")
            ax.set(title=title, xlabel="sector")
        paths.append(save_png(fig, output_dir, "sectors.png"))
    return paths
