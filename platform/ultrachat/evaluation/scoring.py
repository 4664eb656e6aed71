"""From verdicts to the report's numbers: pair outcomes, win rates with bootstrap intervals, the judge's
position consistency, a length-controlled win rate, and mean scores.

Pairwise, each prompt is judged in both answer orders. Both verdicts name the same winner (or both a
tie): that is the outcome. They disagree: the verdict flipped with the order, and the outcome is a tie
(MT-bench's rule); the share of agreeing pairs is the position-consistency rate. A pair with a
missing verdict (unparseable, failed) has no outcome and is counted as incomplete, not guessed.

Outcomes are scored for the first candidate of a pair: 1 win, 0.5 tie, 0 lose. Win rate "ties as
half" is their mean; "without ties" is wins / (wins + losses).
"""

from __future__ import annotations

import math

import numpy as np

WIN, TIE, LOSE = 1.0, 0.5, 0.0


def pair_outcome(first_order: str | None, second_order: str | None) -> tuple[float | None, bool | None]:
    """Verdicts ("A", "B", "tie") for (X shown first, Y second) and (Y first, X second) -> (outcome for
    X, consistent); (None, None) when either verdict is missing."""
    if first_order is None or second_order is None:
        return None, None
    x_first = {"A": WIN, "B": LOSE, "tie": TIE}[first_order]
    x_second = {"A": LOSE, "B": WIN, "tie": TIE}[second_order]
    consistent = x_first == x_second
    return (x_first if consistent else TIE), consistent


def rates(outcomes: list[float]) -> dict:
    """Win/tie/lose shares (percent) and both win rates; None where undefined (no outcomes)."""
    n = len(outcomes)
    if n == 0:
        return {"n": 0, "win": None, "tie": None, "lose": None, "win_rate": None, "win_rate_no_ties": None}
    wins, ties = outcomes.count(WIN), outcomes.count(TIE)
    losses = n - wins - ties
    return {"n": n, "win": 100 * wins / n, "tie": 100 * ties / n, "lose": 100 * losses / n,
            "win_rate": 100 * (wins + ties / 2) / n,
            "win_rate_no_ties": 100 * wins / (wins + losses) if wins + losses else None}


def bootstrap_rates(outcomes: list[float], samples: int, seed: int, confidence: float) -> dict:
    """Percentile intervals of each rate over ``samples`` resamples of the prompts (with replacement)."""
    n = len(outcomes)
    if n == 0:
        return {}
    values = np.asarray(outcomes)
    rng = np.random.default_rng(seed)
    drawn = values[rng.integers(0, n, size=(samples, n))]
    wins, ties = (drawn == WIN).sum(axis=1), (drawn == TIE).sum(axis=1)
    losses = n - wins - ties
    decisive = wins + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        no_ties = np.where(decisive > 0, 100 * wins / np.maximum(decisive, 1), np.nan)
    series = {"win": 100 * wins / n, "tie": 100 * ties / n, "lose": 100 * losses / n,
              "win_rate": 100 * (wins + ties / 2) / n, "win_rate_no_ties": no_ties}
    return {name: interval(values_, confidence) for name, values_ in series.items()}


def interval(values: np.ndarray, confidence: float) -> list[float] | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def length_controlled(outcomes: list[float], length_diffs: list[float], iterations: int = 50) -> dict:
    """The win rate at equal answer lengths, after AlpacaEval 2's length control, simplified.

    A logistic model of the outcome on the standardized length difference, p = sigmoid(theta + phi *
    tanh(d / sd(d))), is fitted to the outcomes (ties as 0.5: a quasi-likelihood); sigmoid(theta) is the
    win rate it predicts when both answers are equally long. AlpacaEval 2 also has per-instruction
    difficulty terms, which need many models per prompt; with one pair only the length term is kept.
    ``longer_wins`` is the share of decisive outcomes the longer answer won (FastChat's GPT-4 verdicts: ~68%).
    """
    y, d = np.asarray(outcomes, dtype=float), np.asarray(length_diffs, dtype=float)
    result = {"win_rate": None, "length_coefficient": None, "longer_wins": None, "n": int(len(y))}
    decisive = (y != TIE) & (d != 0)
    if decisive.any():
        result["longer_wins"] = float(100 * np.mean((y[decisive] == WIN) == (d[decisive] > 0)))
    if len(y) < 2:
        return result
    scale = float(np.std(d))
    x = np.tanh(d / scale) if scale > 0 else np.zeros_like(d)
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iterations):  # Newton's method; a ridge term keeps separable data finite
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (y - p) - 1e-3 * beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    result["win_rate"] = float(100 / (1 + math.exp(-beta[0])))
    result["length_coefficient"] = float(beta[1])
    return result


def score_summary(scores: list[float], samples: int, seed: int, confidence: float) -> dict:
    """Mean 1-10 score with its bootstrap interval, and the histogram of integer scores."""
    if not scores:
        return {"n": 0, "mean": None, "ci": None, "histogram": {}}
    values = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    histogram: dict[str, int] = {}
    for score in scores:
        histogram[f"{score:g}"] = histogram.get(f"{score:g}", 0) + 1
    return {"n": len(scores), "mean": float(values.mean()), "ci": interval(means, confidence),
            "histogram": dict(sorted(histogram.items(), key=lambda item: float(item[0])))}


def distribution(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    array = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(array, [10, 50, 90])
    return {"n": len(values), "mean": float(array.mean()), "p10": float(p10), "p50": float(p50),
            "p90": float(p90), "max": float(array.max())}
