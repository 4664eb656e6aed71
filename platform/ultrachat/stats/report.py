"""stats.json and report.md: the paper's table with this dataset's row beside it, then the breakdowns."""

from __future__ import annotations

import json
import logging

from ultrachat import storage
from ultrachat.stats.aggregate import Aggregate

logger = logging.getLogger(__name__)

# The paper's dataset table (ultrachat-reference.md section 3): dialogues, avg turns, avg dialogue
# length, avg utterance length, MTLD, topic diversity, coherence, user simulation.
PAPER_TABLE = [
    ("Self-Instruct", 82_439, 1, 69.8, 29.2, 24.9, 0.733, None, "no"),
    ("Stanford Alpaca", 52_002, 1, 91.1, 64.5, 42.8, 0.727, None, "no"),
    ("SODA", 1_486_869, 3.6, 231.8, 22.5, 38.6, 0.797, 8.48, "no"),
    ("GPT-4-LLM", 61_002, 1, 179.6, 142.9, 48.9, 0.721, None, "no"),
    ("BELLE", 1_436_679, 1, 102.3, 63.3, 35.9, 0.771, None, "no"),
    ("Baize", 210_311, 3.1, 293.9, 52.8, 67.1, 0.751, 9.06, "yes"),
    ("GPT4ALL", 711_126, 1, 597.7, 318.9, 62.7, 0.692, None, "no"),
    ("UltraChat", 1_468_352, 3.8, 1467.4, 309.3, 74.3, 0.702, 9.06, "yes"),
]

DEFINITIONS = {
    "turns": "rounds per dialogue = assistant replies (a last user message without a reply is counted apart)",
    "tokens": "the configured HF tokenizer on each message's text, without special tokens or chat template; "
              "dialogue length = sum over its messages (mean over dialogues); utterance length = mean over "
              "messages of both roles",
    "mtld": "LexicalRichness(text).mtld(threshold) per message (bidirectional; the paper's package), mean over "
            "messages with at least one word (its tokenizer lowercases, drops digits, splits on punctuation); "
            "median and per-dialogue MTLD (one score on the dialogue's joined text) beside it, as short "
            "messages make per-message MTLD unstable",
    "topic_similarity": "mean pairwise cosine similarity of dialogue embeddings over a seeded sample "
                        "(lower = more diverse), exact over all pairs, standard error 2 sd(m_i)/sqrt(n); "
                        "dialogues longer than the embedder's window are embedded in windows from the start "
                        "and averaged. Not comparable to the paper's column: cosine scales differ by model",
    "coherence": "a judge LLM's 1-10 score of whole dialogues on a seeded sample, mean of the parseable verdicts",
    "near_duplicates": "share of dialogues whose opening / whole text is an exact, normalised or MinHash "
                       "(Jaccard ~0.5 on word 3-grams) duplicate of an earlier one, in a fixed pseudo-random order",
}


def _figure(value, n: int, seed=None, **extra) -> dict:
    return {"value": value, "n": n, "seed": seed, **extra}


def build_stats(config, aggregate: Aggregate, topic: dict | None, coherence: dict | None,
                duplicates: dict | None, files: int) -> dict:
    overall = aggregate.groups["overall"].summary()
    group = aggregate.groups["overall"]
    utterances = group.utterances().n
    head = {
        "dialogues": _figure(overall["dialogues"], overall["dialogues"]),
        "avg_turns": _figure(overall["avg_turns"], overall["dialogues"], median=overall["median_turns"]),
        "avg_dialogue_tokens": _figure(overall["avg_dialogue_tokens"], overall["dialogues"],
                                       median=overall["median_dialogue_tokens"]),
        "avg_utterance_tokens": _figure(overall["avg_utterance_tokens"], utterances,
                                        median=overall["median_utterance_tokens"]),
        "mtld": _figure(overall["mtld"]["mean"], overall["mtld"]["n"], median=overall["mtld"]["median"],
                        per_dialogue=overall["mtld_dialogue"]["mean"], threshold=config.mtld.threshold,
                        skipped_utterances=overall["mtld_skipped_utterances"]),
        "topic_similarity": None if not topic or topic["mean"] is None else _figure(
            topic["mean"], topic["n"], topic["seed"], se=topic["se"], model=topic["model"]),
        "coherence": None if not coherence or coherence["mean"] is None else _figure(
            coherence["mean"], coherence["n"], coherence["seed"], se=coherence["se"], model=coherence["model"],
            unparseable=coherence["unparseable"], failed=coherence["failed"]),
        "near_duplicates": None if not duplicates else {
            "opening_share": duplicates["opening"]["share"], "dialogue_share": duplicates["dialogue"]["share"],
            "n": duplicates["dialogues"], "seed": None},
    }
    return {
        "input": config.input.path, "files": files, "rows": aggregate.rows, "tokenizer": config.tokenizer,
        "overall_statuses": config.input.overall_statuses, "overall": head, "definitions": DEFINITIONS,
        "groups": {name: stats.summary() for name, stats in sorted(aggregate.groups.items())},
        "topic": topic, "coherence": coherence, "near_duplicates": duplicates,
        "problems": {"counts": dict(aggregate.problems.most_common()), "examples": aggregate.problem_examples},
        # The overall group's distributions, value -> count (MTLD binned to 0.1), for plots and re-analysis.
        "histograms": {**{f"utterance_tokens:{r}": dict(d.values()) for r, d in group.utterance_tokens.items()},
                       "mtld": dict(group.mtld.values()), "mtld_dialogue": dict(group.mtld_dialogue.values()),
                       "dialogue_tokens": dict(group.dialogue_tokens.values())},
    }


def headline(stats: dict) -> dict:
    return {name: (figure or {}).get("value") for name, figure in stats["overall"].items()
            if name != "near_duplicates"}


def _cell(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _value(figure: dict | None):
    return None if figure is None else figure["value"]


def _paper_table(stats: dict, name: str) -> list[str]:
    head = stats["overall"]
    lines = ["| Dataset | #Dialogues | Avg turns | Avg dialogue len (tokens) | Avg utterance len | MTLD | "
             "Topic similarity (lower = more diverse) | Coherence (1-10) | User sim |", "|---" * 9 + "|"]
    for row in PAPER_TABLE:
        lines.append("| " + " | ".join([row[0], _cell(row[1]), _cell(row[2]), _cell(row[3]), _cell(row[4]),
                                        _cell(row[5]), _cell(row[6], 3), _cell(row[7], 2), row[8]]) + " |")
    ours = [f"**{name}**", _cell(_value(head["dialogues"])), _cell(_value(head["avg_turns"]), 2),
            _cell(_value(head["avg_dialogue_tokens"])), _cell(_value(head["avg_utterance_tokens"])),
            _cell(_value(head["mtld"])), _cell(_value(head["topic_similarity"]), 3) + ("*" if head["topic_similarity"] else ""),
            _cell(_value(head["coherence"]), 2), "yes" if any(k.startswith("status:") for k in stats["groups"]) else "?"]
    lines.append("| " + " | ".join(ours) + " |")
    return lines


def _breakdown(stats: dict, prefix: str, title: str) -> list[str]:
    groups = {k[len(prefix):]: v for k, v in stats["groups"].items() if k.startswith(prefix)}
    if not groups:
        return []
    lines = ["", f"## {title}", "", "| | Dialogues | Avg turns | Avg dialogue tokens | Avg utterance tokens | "
             "User / assistant utterance tokens | MTLD mean / median | MTLD per dialogue |", "|---" * 8 + "|"]
    for name, g in sorted(groups.items()):
        roles = g["utterance_tokens_by_role"]
        lines.append(f"| {name} | {g['dialogues']:,} | {_cell(g['avg_turns'], 2)} | {_cell(g['avg_dialogue_tokens'])} | "
                     f"{_cell(g['avg_utterance_tokens'])} | {_cell(roles['user']['mean'])} / "
                     f"{_cell(roles['assistant']['mean'])} | {_cell(g['mtld']['mean'])} / {_cell(g['mtld']['median'])} | "
                     f"{_cell(g['mtld_dialogue']['mean'])} |")
    return lines


def render_report(stats: dict, plots: list[str]) -> str:
    head, name = stats["overall"], "This dataset"
    lines = [f"# Dialogue statistics: {stats['input']}", "",
             f"{stats['rows']:,} records in {stats['files']} files; the dataset's row counts "
             f"{head['dialogues']['value']:,} dialogues (statuses {stats['overall_statuses']} where a status exists); "
             f"tokenizer `{stats['tokenizer']}`.", "", "## The paper's table, with this dataset's row", ""]
    lines += _paper_table(stats, name)
    topic = stats["topic"]
    lines += ["", "Published rows: Ding et al. 2023 (arXiv 2305.14233), table of dataset statistics."]
    if topic and topic["mean"] is not None:
        lines.append(f"\\* Topic similarity {topic['mean']:.3f} ± {topic['se']:.3f} (SE) over n={topic['n']:,} dialogues "
                     f"(seed {topic['seed']}) embedded with `{topic['model']}`. The paper embedded with OpenAI's API; "
                     f"cosine scales differ by model (unrelated texts score ~0.1 with MiniLM, ~0.7 with ada-002), "
                     f"so this column is NOT comparable to the published rows. MTLD and the lengths are.")
    mtld = head["mtld"]
    lines += ["", "## Figures and how they were measured", "",
              f"- Turns: mean {_cell(head['avg_turns']['value'], 2)}, median {_cell(head['avg_turns']['median'])} "
              f"(n={head['avg_turns']['n']:,}). {DEFINITIONS['turns']}.",
              f"- Lengths: dialogue mean {_cell(head['avg_dialogue_tokens']['value'])} / median "
              f"{_cell(head['avg_dialogue_tokens']['median'])} tokens; utterance mean "
              f"{_cell(head['avg_utterance_tokens']['value'])} / median {_cell(head['avg_utterance_tokens']['median'])} "
              f"(n={head['avg_utterance_tokens']['n']:,} messages). {DEFINITIONS['tokens']}. (The paper's own "
              f"figures do not add up: 1467.4 / (3.8 x 2) is not 309.3, so its averaging differed.)",
              f"- MTLD (threshold {mtld['threshold']}): mean {_cell(mtld['value'])} (the paper's column), median "
              f"{_cell(mtld['median'])}, per dialogue {_cell(mtld['per_dialogue'])}; n={mtld['n']:,} messages, "
              f"{mtld['skipped_utterances']:,} without a word skipped. {DEFINITIONS['mtld']}."]
    coherence = stats["coherence"]
    if coherence is None:
        lines.append("- Coherence: not measured (no `judge` section in the config).")
    else:
        lines.append(f"- Coherence: mean {_cell(coherence['mean'], 2)} ± {_cell(coherence['se'], 2)} (SE) from "
                     f"{coherence['n']:,} parseable verdicts of {coherence['planned']:,} sampled (seed {coherence['seed']}) "
                     f"by `{coherence['model']}` at {coherence['base_url']}; unparseable verdicts: "
                     f"{coherence['unparseable']}, failed calls: {coherence['failed']} {coherence['errors'] or ''}.")
        lines += [f"  - unparseable verdict: {v!r}" for v in coherence["unparseable_examples"]]
    duplicates = stats["near_duplicates"]
    if duplicates:
        for part in ("opening", "dialogue"):
            d = duplicates[part]
            lines.append(f"- Near-duplicate {part}s: {d['share']:.2%} ({d['duplicates']:,} of {duplicates['dialogues']:,};"
                         f" by rule {d['by_rule']}). {DEFINITIONS['near_duplicates']}.")
    lines += _breakdown(stats, "sector:", "By sector")
    lines += _breakdown(stats, "status:", "By status (every record of the generate output)")
    problems = stats["problems"]["counts"]
    lines += ["", "## Records that could not be measured", ""]
    if not problems:
        lines.append("None.")
    for label, count in problems.items():
        lines.append(f"- {label}: {count:,}")
        lines += [f"  - {example}" for example in stats["problems"]["examples"].get(label, [])]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_outputs(config, stats: dict) -> dict[str, str]:
    from ultrachat.stats.plots import draw_plots

    plots = draw_plots(config.output_dir, stats) if config.plots else []
    paths = {"stats_json": storage.write_text(storage.join(config.output_dir, "stats.json"),
                                              json.dumps(stats, indent=2, default=str) + "\n"),
             "report": storage.write_text(storage.join(config.output_dir, "report.md"), render_report(stats, plots))}
    logger.info("stats: report %s, figures %s", paths["report"], headline(stats))
    return paths
