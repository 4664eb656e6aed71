"""results.json and report.md: the evaluation readable without opening the JSON."""

from __future__ import annotations

import json
import logging

from ultrachat import storage

logger = logging.getLogger(__name__)

# Below this many parsed verdicts, or with a judge this small, the report says the numbers are weak.
_FEW_VERDICTS = 30


def write_outputs(config, results: dict) -> dict[str, str]:
    from ultrachat.evaluation.plots import draw_plots

    plots = draw_plots(config.output_dir, results) if config.plots else []
    paths = {"results_json": storage.write_text(storage.join(config.output_dir, "results.json"),
                                                json.dumps(results, indent=2, default=str) + "\n"),
             "report": storage.write_text(storage.join(config.output_dir, "report.md"),
                                          render_report(config, results, plots))}
    logger.info("evaluate: report %s", paths["report"])
    return paths


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ci(ci: dict, name: str) -> str:
    span = (ci or {}).get(name)
    return "" if not span else f" [{span[0]:.1f}, {span[1]:.1f}]"


def _score(summary: dict) -> str:
    if not summary or summary["mean"] is None:
        return "n/a"
    ci = summary.get("ci")
    return f"{summary['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f" (n={summary['n']})"


def render_report(config, results: dict, plots: list[str]) -> str:
    judge = results["judge"]
    level = int(100 * config.bootstrap.confidence)
    lines = [f"# Evaluation: {', '.join(results['candidates'])}", "",
             f"{results['prompts']} prompts in {len(results['classes'])} classes ({config.prompts.path}); judge "
             f"`{judge['model']}` at {judge['base_url']}; protocols {', '.join(results['protocols'])}. Intervals are "
             f"{level}% bootstrap intervals over the prompts ({config.bootstrap.samples} resamples, seed "
             f"{config.bootstrap.seed}).", ""]
    lines += _trust(judge, config.judge.caveat)
    if "pairwise" in results:
        lines += _pairwise(results, level)
    if "single" in results:
        lines += _single(results)
    lines += _candidates(results)
    lines += _judge_section(judge)
    lines += ["## The paper's numbers, for reference", "",
              f"Judge {results['paper']['judge']}, the same 385 prompts, 13B models:", ""]
    for pair, p in results["paper"]["pairwise"].items():
        lines.append(f"- pairwise {pair}: win {p['win']} / tie {p['tie']} / lose {p['lose']}")
    lines.append("- independent scores: " + ", ".join(f"{m} {s:.2f}" for m, s in results["paper"]["single"].items()))
    lines += ["", "Only comparable in kind: other models, another judge, and (in a subset run) other prompts.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["Per-prompt answers and verdicts: results.json (`per_prompt`).", ""]
    return "\n".join(lines)


def _trust(judge: dict, caveat: str | None) -> list[str]:
    """A plain warning when the numbers rest on little: a judge named weak, few parsed verdicts, many lost."""
    notes = [caveat.rstrip(". ")] if caveat else []
    if judge["parsed"] < _FEW_VERDICTS:
        notes.append(f"only {judge['parsed']} of {judge['planned']} verdicts parsed: the intervals are wide and the "
                     f"numbers show that the loop works more than which model is better")
    if judge["parse_failure_rate"] and judge["parse_failure_rate"] > 10:
        notes.append(f"{judge['parse_failure_rate']:.0f}% of the judge's replies had no verdict even when asked again")
    if judge["position_consistency"] is not None and judge["position_consistency"] < 60:
        notes.append(f"the judge kept its verdict when the answers swapped places in only "
                     f"{judge['position_consistency']:.0f}% of pairs (GPT-4 in FastChat: 87%): it mostly follows the order")
    if not notes:
        return []
    parsed = f"{judge['parsed']} of {judge['planned']} verdicts parsed"
    return ["> **Read with care:** " + "; ".join(notes) + f" ({parsed}). A strong judge (e.g. GPT-4-class, or a large open "
            "model served by `ultrachat serve`) is what the paper's protocol assumes.", ""]


def _pairwise(results: dict, level: int) -> list[str]:
    lines = ["## Pairwise (both answer orders; a verdict that flips with the order is a tie)", "",
             "| pair | n | win % | tie % | lose % | win rate, ties half | win rate, no ties | length-controlled | "
             "incomplete |", "|---|---|---|---|---|---|---|---|---|"]
    for name, pair in results["pairwise"].items():
        o, ci = pair["overall"], pair["overall"]["ci"]
        lc = pair["length_controlled"]["win_rate"]
        lines.append(f"| {name} | {o['n']} | {_pct(o['win'])}{_ci(ci, 'win')} | {_pct(o['tie'])}{_ci(ci, 'tie')} | "
                     f"{_pct(o['lose'])}{_ci(ci, 'lose')} | {_pct(o['win_rate'])}{_ci(ci, 'win_rate')} | "
                     f"{_pct(o['win_rate_no_ties'])}{_ci(ci, 'win_rate_no_ties')} | {_pct(lc)} | {pair['incomplete']} |")
    lines += ["", "Win/tie/lose are for the first model of each pair. Length-controlled: the win rate a logistic fit "
              "of the outcome on the answers' length difference predicts at equal length (AlpacaEval 2's length "
              "control without its per-prompt terms; docs/quality.md).", ""]
    for name, pair in results["pairwise"].items():
        lines += [f"### {name} per class", "", "| class | n | win % | tie % | lose % | win rate, ties half |",
                  "|---|---|---|---|---|---|"]
        for klass, r in pair["per_class"].items():
            ci = r["ci"]
            lines.append(f"| {klass} | {r['n']} | {_pct(r['win'])}{_ci(ci, 'win')} | {_pct(r['tie'])}{_ci(ci, 'tie')} | "
                         f"{_pct(r['lose'])}{_ci(ci, 'lose')} | {_pct(r['win_rate'])}{_ci(ci, 'win_rate')} |")
        lc = pair["length_controlled"]
        lines += ["", f"Position consistency {_pct(pair['position_consistency'])}% of {pair['complete']} complete "
                      f"pairs; the longer answer won {_pct(lc['longer_wins'])}% of decisive verdicts; length "
                      f"coefficient {lc['length_coefficient'] if lc['length_coefficient'] is None else round(lc['length_coefficient'], 3)}.",
                  ""]
    return lines


def _single(results: dict) -> list[str]:
    classes = list(results["classes"])
    names = list(results["single"])
    lines = ["## Independent scores (1-10)", "", "| class | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    lines.append("| **overall** | " + " | ".join(_score(results["single"][n]["overall"]) for n in names) + " |")
    for klass in classes:
        lines.append(f"| {klass} | " + " | ".join(_score(results["single"][n]["per_class"][klass]) for n in names) + " |")
    return lines + [""]


def _candidates(results: dict) -> list[str]:
    lines = ["## Answers", "", "| candidate | model | answered | failed | length words p10/p50/p90 (mean) | tokens "
             "mean | finish reasons |", "|---|---|---|---|---|---|---|"]
    for name, c in results["candidates"].items():
        d, t = c["length_words"], c["length_tokens"]
        length = f"{d['p10']:.0f}/{d['p50']:.0f}/{d['p90']:.0f} ({d['mean']:.0f})" if d["n"] else "n/a"
        lines.append(f"| {name} | {c['model']} | {c['answered']} | {c['failed']} | {length} | "
                     f"{t['mean']:.0f} | {c['finish_reasons']} |" if t["n"] else
                     f"| {name} | {c['model']} | {c['answered']} | {c['failed']} | {length} | n/a | {c['finish_reasons']} |")
    for name, c in results["candidates"].items():
        if c["failed"] or c["missing"]:
            lines.append(f"\n{name}: {c['failed']} answers failed {c['errors']}, {c['missing']} missing; e.g. "
                         f"{(c['error_examples'] or [''])[0]}")
    return lines + [""]


def _judge_section(judge: dict) -> list[str]:
    lines = ["## The judge", "",
             f"- verdicts: {judge['planned']} planned, {judge['parsed']} parsed, {judge['unparseable']} unparseable "
             f"(parse-failure rate {_pct(judge['parse_failure_rate'])}%, after asking once more: "
             f"{judge['asked_again']} replies needed it), {judge['failed']} calls failed {judge['errors']}",
             f"- schema-constrained JSON (`response_format`) for {judge['schema_constrained']} of {judge['judged']} "
             f"verdicts (structured_output: {judge['structured_output']})",
             f"- position consistency: {_pct(judge['position_consistency'])}% of complete pairs kept their verdict "
             f"when the answers swapped places (FastChat's GPT-4 verdicts flip 12.9% of the time)"]
    for example in judge["unparseable_examples"]:
        lines.append(f"- unparseable reply: {example!r}")
    for example in judge["error_examples"]:
        lines.append(f"- failed call: {example}")
    return lines + [""]
