"""Tiny LLaMA-architecture models built offline, for tests and the local default.

Nothing is downloaded: a byte-level BPE tokenizer is trained on the dialogue corpus shipped in
``ultrachat/data/tiny_corpus.jsonl``, a LLaMA model is initialised from a seed and briefly trained on
the same corpus (so greedy outputs are varied text, not one repeated token), and both are saved in
Hugging Face format (safetensors). The same size and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE

logger = logging.getLogger(__name__)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


@dataclass(frozen=True)
class TinySpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    train_steps: int
    # vLLM's CPU attention kernels need head_dim >= 32.
    head_dim: int = 32
    seq_len: int = 128
    batch_size: int = 8
    learning_rate: float = 3e-3


SIZES = {
    "tiny": TinySpec(vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=2, num_kv_heads=1, train_steps=60),
    "small": TinySpec(vocab_size=2048, hidden_size=256, intermediate_size=688, num_layers=4,
                      num_heads=8, num_kv_heads=4, train_steps=400, learning_rate=4e-3),
}


def _corpus_text() -> str:
    return resources.files("ultrachat.data").joinpath("tiny_corpus.jsonl").read_text("utf-8")


def corpus_dialogues() -> list[list[dict]]:
    """The shipped dialogues, as lists of {role, content} messages."""
    return [json.loads(line)["messages"] for line in _corpus_text().splitlines() if line.strip()]


def build_fingerprint(size: str) -> str:
    """Short hash of everything a build depends on: corpus, recipe, chat template."""
    recipe = f"{_corpus_text()}|{SIZES[size]!r}|{ULTRACHAT_CHAT_TEMPLATE}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


def build_tokenizer(vocab_size: int):
    """A fast byte-level BPE tokenizer with <pad>/<s>/</s> and the UltraChat chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for dialogue in corpus_dialogues() for m in dialogue]
    texts += ["User: ", "Assistant: "]
    backend = Tokenizer(models.BPE())
    # Spaces attach to the word before them ("Assistant: " | "A " | "ball"), so the assistant span
    # starts on a token boundary and a prompt ending in "Assistant: " tokenizes as in training.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_previous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    bos_id = backend.token_to_id(BOS)
    # Like LLaMA: plain-text encodes start with <s>; the chat template writes its own <s> and is
    # encoded without special tokens.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=2048,
        padding_side="right",
    )
    tokenizer.chat_template = ULTRACHAT_CHAT_TEMPLATE
    return tokenizer


def _training_batches(tokenizer, spec: TinySpec, generator):
    import torch

    ids: list[int] = []
    for dialogue in corpus_dialogues():
        ids += tokenizer.apply_chat_template(dialogue, tokenize=True, return_dict=False)
    stream = torch.tensor(ids, dtype=torch.long)
    n_windows = len(stream) - spec.seq_len - 1
    if n_windows <= 0:
        raise RuntimeError(f"the tiny corpus has only {len(stream)} tokens; need > {spec.seq_len + 1}")
    for _ in range(spec.train_steps):
        starts = torch.randint(0, n_windows, (spec.batch_size,), generator=generator)
        yield torch.stack([stream[s : s + spec.seq_len] for s in starts.tolist()])


def _train(model, tokenizer, spec: TinySpec, seed: int) -> float:
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.0)
    # Short warmup, then cosine decay: converges in a few hundred steps without loss spikes.
    warmup = max(1, spec.train_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(step, spec.train_steps) / spec.train_steps))))
    model.train()
    loss = torch.tensor(float("nan"))
    for step, batch in enumerate(_training_batches(tokenizer, spec, generator), start=1):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == spec.train_steps:
            logger.info("tiny-model pre-training step %d/%d loss %.3f", step, spec.train_steps, loss.item())
    model.eval()
    return loss.item()


def build_tiny_model(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build the model and tokenizer into ``out_dir`` (created; must not hold another model)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; expected one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise ValueError(f"{out} exists and is not empty; give a new or empty directory for --out")
    started = time.monotonic()
    tokenizer = build_tokenizer(spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    # A fixed thread count keeps float reductions, hence the saved weights, the same on every machine
    # (measured: 1 and 2 threads give byte-identical models at these sizes).
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        final_loss = _train(model, tokenizer, spec, seed)
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Write next to the target and rename, so a crash never leaves a half-written model dir.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "tiny_model.json").write_text(
            json.dumps({"size": size, "seed": seed, "final_train_loss": round(final_loss, 4)}, indent=2)
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built tiny model %s (seed %d, %.1fM params) in %.0f s at %s", size, seed,
                model.num_parameters() / 1e6, time.monotonic() - started, out)
    return out
