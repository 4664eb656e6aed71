"""Load from a second process: N concurrent streaming chat completions through the official openai client.

    python serving_client.py BASE_URL API_KEY MODEL STREAMS MAX_TOKENS

Prints one JSON line: counts by outcome (ok, 429, 503, other), finish reasons of the completed
streams and any unexpected errors. Retries are off, so every overload answer is seen as it came.
"""

import asyncio
import json
import sys
from collections import Counter

import openai


async def one(client: openai.AsyncOpenAI, model: str, max_tokens: int, index: int) -> tuple[str, str | None]:
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Tell me about item {index}."}],
            max_tokens=max_tokens, stream=True, stream_options={"include_usage": True})
        finish, usage = None, None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            usage = chunk.usage or usage
        return ("ok", finish) if usage is not None else ("other", "stream ended without usage")
    except openai.APIStatusError as err:
        outcome = str(err.status_code) if err.status_code in (429, 503) else "other"
        return outcome, f"{err.status_code}: {err.message[:200]}"
    except openai.APIError as err:
        return "other", f"{type(err).__name__}: {err}"


async def main(base_url: str, key: str, model: str, streams: int, max_tokens: int) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=180)
    results = await asyncio.gather(*(one(client, model, max_tokens, i) for i in range(streams)))
    counts = Counter(outcome for outcome, _ in results)
    print(json.dumps({"counts": dict(counts),
                      "finish": dict(Counter(detail for outcome, detail in results if outcome == "ok")),
                      "errors": [detail for outcome, detail in results if outcome == "other"][:5]}))


if __name__ == "__main__":
    url, api_key, served, count, tokens = sys.argv[1:6]
    asyncio.run(main(url, api_key, served, int(count), int(tokens)))
