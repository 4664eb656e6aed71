"""Cost and scale plan for UltraChat at the paper's scale. Standard library only.

    python bench/cost_plan.py                                   # 8x H100, 8B user sim, 70B assistant
    python bench/cost_plan.py --gpus 16 --gpu-hour-usd 2.5 --kept-fraction 0.85 --prefix-cache-hit 0

Every input below is a named constant labelled PAPER (../shared/ultrachat-reference.md), OURS (configs,
prompts), MEASURED (docs/benchmarks.md, the generate job's dry run) or ASSUMPTION (cannot be measured on
the 2-core CPU machine). docs/operations.md ("Cost and scale plan") explains the output. Prints Markdown.
"""

from __future__ import annotations

import argparse

# ---- PAPER: the dialogues kept per sector (I and III "about 500k"; II the rest of 1,468,352), their stats.
PAPER_DIALOGUES = {"I": 500_000, "II": 468_352, "III": 500_000}
PAPER_DIALOGUE_TOKENS, PAPER_TURNS, PAPER_UTTERANCE_TOKENS = 1467.4, 3.8, 309.3
PAPER_TRAIN = {"params": 13.0e9, "epochs": 3, "gpus": 128}  # LLaMA-13B, 3 epochs, 128 A100, no packing

# ---- OURS: rounds per sector (uniform integers, generation/dialogue.py); prompt lengths in characters of
# generation/prompts.py: assistant system prompt, user-sim system prompt (mean over personas), and the
# continue-as-user instruction appended after the history (mean over sectors).
ROUNDS = {"I": (3, 7), "II": (2, 4), "III": (2, 4)}
CHARS_ASSISTANT_SYSTEM, CHARS_USER_SYSTEM, CHARS_CONTINUE = 170, 218, 472

# ---- MEASURED: the dry run of configs/generate/ultrachat-paper.yaml (10,000 entities, 105,000 C4 pieces):
# stage, sector, LLM calls, items per call. The sector's candidates are the supply for its target.
CONSTRUCTION = [("subtopics", "I", 60, 18.5), ("topic_questions", "I", 1_110, 10),
                ("further_questions", "I", 11_100, 10), ("meta_questions", "I", 10_000, 5),
                ("specific_questions", "I", 50_000, 10), ("extended_questions", "I", 50_000, 20),
                ("instructions", "II", 26_000, 20), ("refined_instructions", "II", 416_000, 1),
                ("material_instructions", "III", 105_000, 5)]
CANDIDATES = {"I": 1_622_100, "II": 520_000, "III": 525_000}
# docs/benchmarks.md: (a) OpenAI path at 0.952 of the ideal C/L; (b) our vLLM path at 0.83-0.99 of raw
# vLLM in steady state (CPU, 48-192 dialogues in flight; the lowest, 0.83 at 96, is used: the only measured
# engine-side factor, a conservative stand-in for GPU);
# training: Ray Train + DeepSpeed at 0.92 of plain PyTorch; non-padding share 0.983 packed, 0.80 dynamic.
API_PATH_EFF, VLLM_PATH_EFF, TRAIN_PATH_EFF, NONPAD_PACKED, NONPAD_DYNAMIC = 0.952, 0.83, 0.92, 0.983, 0.80

# ---- ASSUMPTIONS (tokens). Llama-3 tokenizer ~4 characters per English token. Llama-3.1 chat template:
# ~25 tokens per prompt (BOS, system header with its date lines), ~5 per message, ~4 for the generation prompt.
CHARS_PER_TOKEN, TEMPLATE_TOKENS, MESSAGE_TOKENS, GEN_TOKENS = 4.0, 25, 5, 4
# Opening line tokens: I a question (~20); II 80% refined (~70) + 20% raw (~25) instructions; III the C4
# piece (C4-en averages ~430 tokens/document; capped at max_material_tokens 1024 -> ~380) + instruction and
# template (~30). Later user turns: our instruction asks for "one to three sentences" (~35 tokens).
OPENING_TOKENS = {"I": 20, "II": 61, "III": 410}
USER_TURN_TOKENS = 35
# Construction prompts: template characters / 4 + filled-in values + chat template; output = items x tokens.
CONSTRUCTION_PROMPT = {"subtopics": 71, "topic_questions": 88, "further_questions": 103, "meta_questions": 77,
                       "specific_questions": 102, "extended_questions": 108, "instructions": 87,
                       "refined_instructions": 107, "material_instructions": 501}
CONSTRUCTION_ITEM_TOKENS = {"subtopics": 8, "topic_questions": 20, "further_questions": 22, "meta_questions": 15,
                            "specific_questions": 20, "extended_questions": 20, "instructions": 25,
                            "refined_instructions": 70, "material_instructions": 25}
# ASSUMPTION (engines). Per-H100 rates of a model at its tensor-parallel size, FP8 weights, under maximum
# load. Source: NVIDIA TensorRT-LLM "Performance Overview" (docs/source/performance/perf-overview.md, v1.0,
# 2025): total output tokens/s for Llama-3.3-70B FP8 on 2 H100 (TP2) and Llama-3.1-8B FP8 on 1 H100 at
# ISL/OSL 128/128 ... 5000/500. We fit GPU-seconds per request = ISL/prefill + OSL/decode
# + OSL*(ISL+OSL/2)/ctx (the last term: attention over the context while decoding) by relative least
# squares: every published point within +-8% (20000/2000, not fitted, 7-10% high). vLLM is not
# TensorRT-LLM: VLLM_VS_TRTLLM (0.8) is an ASSUMPTION, then our measured VLLM_PATH_EFF applies on top.
ENGINES = {"70B": {"tp": 2, "prefill": 7_337, "decode": 6_656, "ctx": 7.65e6},
           "8B": {"tp": 1, "prefill": 70_747, "decode": 62_845, "ctx": 4.08e7}}
VLLM_VS_TRTLLM = 0.8
# ASSUMPTION: the 8B at TP2 (sharing a 70B replica's two GPUs) at 0.8 of its TP1 per-GPU rate.
TP2_8B_EFF = 0.8
# ASSUMPTION (training): dense BF16 peak per GPU; A100 run with ZeRO-3 + optimizer offload at lower MFU.
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12}
# ASSUMPTION (prices). GPU on-demand $/GPU-hour: early-2026 list ranges H100 SXM $2.49-3.99, A100 80GB
# $1.49-2.49 (pricegpu.pages.dev, "H100 vs A100 cloud pricing"). API list prices $/1M tokens (input,
# output) from platform.openai.com/docs/pricing as reported by price trackers in Apr-Jun 2026
# (ai.cloudprice.net ingestion 2026-06-20; pecollective.com April 2026); gpt-3.5-turbo-0125 (the paper's
# model family) is its January 2024 list price. Not re-checked here: check before spending.
API_PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-3.5-turbo-0125": (0.50, 1.50), "gpt-4o": (2.50, 10.00)}
EVAL = {"prompts": 385, "judge_calls": 385 * 2 + 385 * 2, "judge_in": 1_100, "judge_out": 200, "answer_out": 400}


def dialogue(sector: str, assistant_tokens: float) -> dict:
    """Per-role sums for one dialogue of ``sector``, averaged over its uniform rounds. The whole history is
    re-sent every turn, so prompt tokens are summed turn by turn. ``new`` is what is not a prefix of the
    same role's previous prompt (what a prefix cache cannot serve); ``ctx`` is sum(out * (prompt + out/2))."""
    lo, hi = ROUNDS[sector]
    o, u, a = OPENING_TOKENS[sector], USER_TURN_TOKENS, assistant_tokens
    sys_a = TEMPLATE_TOKENS + CHARS_ASSISTANT_SYSTEM / CHARS_PER_TOKEN + MESSAGE_TOKENS
    sys_u = TEMPLATE_TOKENS + CHARS_USER_SYSTEM / CHARS_PER_TOKEN + MESSAGE_TOKENS
    instr = CHARS_CONTINUE / CHARS_PER_TOKEN
    total = {role: dict.fromkeys(("calls", "prompt", "new", "out", "ctx", "msg_tokens"), 0.0)
             for role in ("user", "assistant")}
    for rounds in range(lo, hi + 1):
        prev_a = prev_u = None
        for r in range(1, rounds + 1):
            history = o + (r - 1) * (a + u) + (2 * r - 1) * MESSAGE_TOKENS  # opening, a1, u2, ..., u_r
            p = sys_a + history + GEN_TOKENS
            _add(total["assistant"], p, p - (prev_a or 0), a)
            prev_a = p
            if r < rounds:  # the user sim sees opening .. a_r (roles swapped) + the instruction after it
                p = sys_u + history + a + MESSAGE_TOKENS + instr + GEN_TOKENS
                shared = 0 if prev_u is None else prev_u - (MESSAGE_TOKENS + a + instr + GEN_TOKENS)
                _add(total["user"], p, p - shared, u)
                prev_u = p
        total["assistant"]["msg_tokens"] += o + rounds * a + (rounds - 1) * u
    n = hi - lo + 1
    return {role: {k: v / n for k, v in sums.items()} for role, sums in total.items()}


def _add(sums: dict, prompt: float, new: float, out: float) -> None:
    sums["calls"] += 1
    sums["prompt"] += prompt
    sums["new"] += new
    sums["out"] += out
    sums["ctx"] += out * (prompt + out / 2)


def gpu_seconds(s: dict, engine: dict, hit: float, factor: float) -> float:
    """H100-seconds for token sums ``s``: the rates are per GPU (a replica's rate / its TP size)."""
    prefill = s["new"] + (1 - hit) * (s["prompt"] - s["new"])
    per_gpu = prefill / engine["prefill"] + s["out"] / engine["decode"] + s["ctx"] / engine["ctx"]
    return per_gpu / factor


def calibrate_assistant_tokens() -> float:
    """Assistant turn length that makes our sectors' mean dialogue the paper's 1467.4 tokens."""
    weights = {s: n / sum(PAPER_DIALOGUES.values()) for s, n in PAPER_DIALOGUES.items()}
    fixed = sum(w * dialogue(s, 0.0)["assistant"]["msg_tokens"] for s, w in weights.items())
    per_a = sum(w * (dialogue(s, 1.0)["assistant"]["msg_tokens"] - dialogue(s, 0.0)["assistant"]["msg_tokens"])
                for s, w in weights.items())
    return (PAPER_DIALOGUE_TOKENS - fixed) / per_a


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=8, help="H100s for construction + dialogues")
    ap.add_argument("--gpu-hour-usd", type=float, default=3.00, help="ASSUMPTION: $ per H100-hour")
    ap.add_argument("--a100-hour-usd", type=float, default=1.80, help="ASSUMPTION: $ per A100-hour")
    ap.add_argument("--kept-fraction", type=float, default=0.90, help="ASSUMPTION: dialogues the filters keep")
    ap.add_argument("--dedup-loss", type=float, default=0.04, help="ASSUMPTION: candidates lost to de-dup")
    ap.add_argument("--prefix-cache-hit", type=float, default=0.5,
                    help="ASSUMPTION: share of re-sent history served by vLLM's prefix cache (0 = none)")
    ap.add_argument("--vllm-vs-trtllm", type=float, default=VLLM_VS_TRTLLM)
    ap.add_argument("--assistant-prefill-tps", type=float, default=ENGINES["70B"]["prefill"])
    ap.add_argument("--assistant-decode-tps", type=float, default=ENGINES["70B"]["decode"])
    ap.add_argument("--user-prefill-tps", type=float, default=ENGINES["8B"]["prefill"])
    ap.add_argument("--user-decode-tps", type=float, default=ENGINES["8B"]["decode"])
    ap.add_argument("--mfu", type=float, default=0.40, help="ASSUMPTION: training MFU on H100 (6N FLOPs)")
    ap.add_argument("--a100-mfu", type=float, default=0.30, help="ASSUMPTION: MFU of the paper's A100 run")
    ap.add_argument("--api-model", default="gpt-4o-mini", choices=sorted(API_PRICES))
    ap.add_argument("--api-in-usd-per-mtok", type=float, help="override the model's input price")
    ap.add_argument("--api-out-usd-per-mtok", type=float, help="override the model's output price")
    ap.add_argument("--api-rpm", type=float, default=10_000, help="ASSUMPTION: org requests/min limit")
    ap.add_argument("--api-tpm", type=float, default=10e6, help="ASSUMPTION: org tokens/min (in + out)")
    ap.add_argument("--api-concurrency", type=int, default=480, help="configs/generate/openai.yaml: 8 x 60")
    ap.add_argument("--api-ttft-s", type=float, default=0.4, help="ASSUMPTION: API time to first token")
    ap.add_argument("--api-decode-tps", type=float, default=80, help="ASSUMPTION: API output tokens/s per call")
    args = ap.parse_args(argv)
    ENGINES["70B"].update(prefill=args.assistant_prefill_tps, decode=args.assistant_decode_tps)
    ENGINES["8B"].update(prefill=args.user_prefill_tps, decode=args.user_decode_tps)
    factor, hit = args.vllm_vs_trtllm * VLLM_PATH_EFF, args.prefix_cache_hit
    a_tok = calibrate_assistant_tokens()

    # Dialogues to simulate (kept / kept fraction) and the openings construction must supply.
    generated = {s: n / args.kept_fraction for s, n in PAPER_DIALOGUES.items()}
    dial = {"user": dict.fromkeys(("calls", "prompt", "new", "out", "ctx"), 0.0)}
    dial["assistant"] = dict(dial["user"])
    for s, n in generated.items():
        for role, sums in dialogue(s, a_tok).items():
            for k in dial[role]:
                dial[role][k] += n * sums[k]
    scale = {s: max(1.0, generated[s] / (1 - args.dedup_loss) / CANDIDATES[s]) for s in generated}
    cons = {s: dict.fromkeys(("calls", "prompt", "new", "out", "ctx"), 0.0) for s in ROUNDS}
    for stage, sector, calls, items in CONSTRUCTION:
        c, p, o = calls * scale[sector], CONSTRUCTION_PROMPT[stage], items * CONSTRUCTION_ITEM_TOKENS[stage]
        for k, v in (("calls", c), ("prompt", c * p), ("new", c * p), ("out", c * o), ("ctx", c * o * (p + o / 2))):
            cons[sector][k] += v

    price_in, price_out = API_PRICES[args.api_model]
    price_in = args.api_in_usd_per_mtok if args.api_in_usd_per_mtok is not None else price_in
    price_out = args.api_out_usd_per_mtok if args.api_out_usd_per_mtok is not None else price_out
    rows, gpu_s = [], {}
    stages = [(f"construction, sector {s}", "70B", cons[s]) for s in ROUNDS]
    stages += [("dialogues: user simulator", "8B", dial["user"]), ("dialogues: assistant", "70B", dial["assistant"])]
    for name, model, s in stages:
        gpu_s[name] = gpu_seconds(s, ENGINES[model], hit, factor)
        usd = (s["prompt"] * price_in + s["out"] * price_out) / 1e6
        rows.append(f"| {name} | {model} | {s['calls'] / 1e6:.3f} M | {s['prompt'] / 1e6:,.0f} M "
                    f"({1 - s['new'] / s['prompt']:.0%}) | {s['out'] / 1e6:,.0f} M | {gpu_s[name] / 3600:,.0f} | "
                    f"{usd:,.0f} |")
    total = {k: sum(s[k] for _, _, s in stages) for k in ("calls", "prompt", "out")}
    print(f"Assistant turn calibrated to {a_tok:.0f} tokens (paper: avg utterance {PAPER_UTTERANCE_TOKENS}, "
          f"dialogue {PAPER_DIALOGUE_TOKENS}); generated dialogues {sum(generated.values()):,.0f} "
          f"(kept {sum(PAPER_DIALOGUES.values()):,} at {args.kept_fraction}); mean rounds "
          f"{sum(PAPER_DIALOGUES[s] * sum(ROUNDS[s]) / 2 for s in ROUNDS) / sum(PAPER_DIALOGUES.values()):.2f} "
          f"(paper {PAPER_TURNS}); construction scaled x{scale['II']:.2f} (II), x{scale['III']:.2f} (III).\n")
    print("Per generated dialogue (each turn's prompt re-sends the whole history):\n\n| sector | rounds | LLM calls "
          "| assistant in / out tokens | user sim in / out tokens |\n| --- | --- | --- | --- | --- |")
    for s in ROUNDS:
        d = dialogue(s, a_tok)
        print(f"| {s} | {ROUNDS[s][0]}-{ROUNDS[s][1]} | {d['user']['calls'] + d['assistant']['calls']:.1f} | "
              f"{d['assistant']['prompt']:,.0f} / {d['assistant']['out']:,.0f} | {d['user']['prompt']:,.0f} / "
              f"{d['user']['out']:,.0f} |")
    print("\n| stage | model | LLM calls | input tokens (re-sent prefix) | output tokens | H100-hours | "
          f"API $ ({args.api_model}) |\n| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    api_usd = (total["prompt"] * price_in + total["out"] * price_out) / 1e6
    print(f"| post-processing (filters, de-dup) | none (CPU) | 0 | - | - | 0 | 0 |\n| **total** | | "
          f"**{total['calls'] / 1e6:.2f} M** | **{total['prompt'] / 1e6:,.0f} M** | **{total['out'] / 1e6:,.0f} M** | "
          f"**{sum(gpu_s.values()) / 3600:,.0f}** | **{api_usd:,.0f}** |\n\n"
          f"{total['calls'] / sum(PAPER_DIALOGUES.values()):.2f}"
          f" LLM calls per kept dialogue; H100-hours at the per-GPU rates x {factor:.2f} (vLLM vs TensorRT-LLM "
          f"{args.vllm_vs_trtllm} x our path {VLLM_PATH_EFF}), prefix-cache hit {hit} of the re-sent prefix.\n")

    # GPU layouts: assistant (70B, TP2 replicas) and user sim (8B, TP1) on separate GPUs; construction first.
    a_work = sum(v for k, v in gpu_s.items() if "user" not in k and "construction" not in k)
    cons_h = sum(v for k, v in gpu_s.items() if "construction" in k) / 3600 / args.gpus
    print(f"{args.gpus} H100s: construction on all GPUs (70B TP2 replicas) {cons_h:.1f} h, then dialogues:\n")
    print("| 70B TP2 replicas (GPUs) | 8B TP1 replicas | dialogue hours | bottleneck | total hours | $ |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for a_gpus in range(2, args.gpus, 2):
        a_h, u_h = a_work / a_gpus / 3600, gpu_s["dialogues: user simulator"] / (args.gpus - a_gpus) / 3600
        hours = max(a_h, u_h) + cons_h
        print(f"| {a_gpus // 2} ({a_gpus}) | {args.gpus - a_gpus} | {max(a_h, u_h):,.1f} | "
              f"{'assistant' if a_h >= u_h else 'user sim'} | {hours:,.1f} | "
              f"{hours * args.gpus * args.gpu_hour_usd:,.0f} |")
    shared_h = (a_work + gpu_s["dialogues: user simulator"] / TP2_8B_EFF) / args.gpus / 3600
    print(f"| {args.gpus // 2} ({args.gpus}), each also holding an 8B TP2 (x{TP2_8B_EFF}) | - | {shared_h:,.1f} | "
          f"both | {shared_h + cons_h:,.1f} | {(shared_h + cons_h) * args.gpus * args.gpu_hour_usd:,.0f} |")

    # Training: tokens = kept dialogues x (paper length + ~4 template tokens per message).
    tokens = sum(PAPER_DIALOGUES.values()) * (PAPER_DIALOGUE_TOKENS + 4 * 2 * PAPER_TURNS)
    print(f"\nTraining on {tokens / 1e9:.2f} B tokens per epoch (6 x params FLOPs per token; Ray Train path "
          f"x{TRAIN_PATH_EFF}):\n\n| recipe | GPUs | FLOPs | hours | $ |\n| --- | --- | --- | --- | --- |")
    for name, params, epochs, gpus, kind, mfu, nonpad, usd in (
            ("paper: 13B, 3 epochs, no packing", 13e9, 3, PAPER_TRAIN["gpus"], "A100", args.a100_mfu,
             NONPAD_DYNAMIC, args.a100_hour_usd),
            ("paper: 13B, 3 epochs, packed", 13e9, 3, 8, "H100", args.mfu, NONPAD_PACKED, args.gpu_hour_usd),
            ("configs/train/llama3-8b.yaml: 8B, 1 epoch, packed", 8.0e9, 1, 8, "H100", args.mfu, NONPAD_PACKED,
             args.gpu_hour_usd)):
        flops = 6 * params * tokens * epochs / nonpad
        hours = flops / (gpus * PEAK_FLOPS[kind] * mfu * TRAIN_PATH_EFF) / 3600
        print(f"| {name} | {gpus} {kind} (MFU {mfu}) | {flops:.2e} | {hours:,.1f} | {hours * gpus * usd:,.0f} |")

    # API: dollars per model, and the hours a rate limit implies.
    eval_usd = (EVAL["judge_calls"] * (EVAL["judge_in"] * API_PRICES["gpt-4o"][0] + EVAL["judge_out"] *
                API_PRICES["gpt-4o"][1])) / 1e6
    print(f"\nAPI (both roles and construction on one model; evaluation: {EVAL['judge_calls']} gpt-4o judge "
          f"calls, ${eval_usd:.0f}):\n\n| model | $ in / out per 1M | $ total |\n| --- | --- | --- |")
    for model, (p_in, p_out) in API_PRICES.items():
        print(f"| {model} | {p_in} / {p_out} | {(total['prompt'] * p_in + total['out'] * p_out) / 1e6:,.0f} |")
    latency = args.api_ttft_s + total["out"] / total["calls"] / args.api_decode_tps  # mean seconds per call
    bounds = {"requests/min": total["calls"] / args.api_rpm / 60,
              "tokens/min": (total["prompt"] + total["out"]) / args.api_tpm / 60,
              "concurrency x latency": total["calls"] * latency / args.api_concurrency / 3600}
    limit = max(bounds, key=bounds.get)
    resent = sum(st["prompt"] - st["new"] for _, _, st in stages)
    print(f"\nPrompt caching at half the input price on every re-sent prefix would save at most "
          f"${resent * price_in / 2e6:,.0f} ({args.api_model}).")
    print(f"\nHours at {args.api_rpm:,.0f} RPM / {args.api_tpm:,.0f} TPM / {args.api_concurrency} in flight x "
          f"{latency:.2f} s per call: " + ", ".join(f"{k} {v:,.1f} h" for k, v in bounds.items())
          + f"; binding: {limit}, {bounds[limit] / API_PATH_EFF:,.1f} h with our measured path efficiency "
          f"{API_PATH_EFF}.")


if __name__ == "__main__":
    main()
