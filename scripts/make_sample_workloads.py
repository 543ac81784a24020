"""Write the small sample files under ``scenarios/data/`` that the workload scenarios read.

Every file is generated here from a fixed seed (never copied from a public dataset): ShareGPT-style
conversations, JSONL prompt/answer pairs, CSV and Parquet columns, a small BPE ``tokenizer.json``
trained on the generated text, and traces in the Mooncake, Azure LLM inference and BurstGPT
formats. Run ``python scripts/make_sample_workloads.py`` to rewrite them; the output is the same
each time.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.workload.prompts import WORDS  # noqa: E402

TOPICS = ("batching", "replicas", "energy per token", "prefill", "decoding", "a queue", "the cache",
          "latency", "throughput", "a small model")


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    out, left = [], n
    while left > 0:
        k = min(left, rng.randint(4, 14))
        out.append(_sentence(rng, k))
        left -= k
    return " ".join(out)


def pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(f"Explain {rng.choice(TOPICS)}: " + _text(rng, 6, 60), _text(rng, 4, 80)) for _ in range(n)]


def write_datasets(out: Path, rng: random.Random) -> list[tuple[str, str]]:
    qa = pairs(rng, 40)
    convs = []
    for i, (q, a) in enumerate(qa):
        turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        if i % 3 == 0:   # a longer conversation: only the first pair is used
            turns += [{"from": "human", "value": _text(rng, 3, 12)}, {"from": "gpt", "value": _text(rng, 3, 12)}]
        convs.append({"id": f"conv-{i}", "conversations": turns})
    convs.append({"id": "no-reply", "conversations": [{"from": "human", "value": "Hello there."}]})
    (out / "sharegpt.json").write_text(json.dumps(convs, indent=1) + "\n")
    with (out / "pairs.jsonl").open("w") as fh:
        for q, a in qa:
            fh.write(json.dumps({"prompt": q, "answer": a}) + "\n")
    with (out / "prompts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "output_tokens"])
        for q, a in qa:
            w.writerow([q, len(a.split())])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": [q for q, _ in qa], "output_tokens": [len(a.split()) for _, a in qa]}),
                   out / "prompts.parquet")
    return qa


def write_tokenizer(out: Path, texts: list[str]) -> None:
    """A small byte-level BPE trained on the generated text: counts differ from words, as a real
    model's do (about 1.3-2 tokens per word here)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))


def write_traces(out: Path, rng: random.Random) -> None:
    """Bursty arrivals over 20 s (a quiet start, a burst, a steady tail) in the three formats.
    Mooncake requests draw their leading blocks from a few shared 'documents'."""
    t, rows = 0.0, []
    while t < 20.0:
        rate = 8.0 if t < 6 else 30.0 if t < 9 else 12.0
        t += rng.expovariate(rate)
        rows.append((round(t, 4), rng.randint(40, 400), rng.randint(4, 60)))
    with (out / "mooncake.jsonl").open("w") as fh:
        next_id = 1000
        for ts, n_in, n_out in rows:
            doc = rng.randrange(3)
            shared = [doc * 100 + i for i in range(rng.randint(0, 3))]     # 64-token blocks
            n_in = max(n_in, 64 * len(shared) + 8)
            own = -(-n_in // 64) - len(shared)
            ids = shared + list(range(next_id, next_id + own))
            next_id += own
            fh.write(json.dumps({"timestamp": int(ts * 1000), "input_length": n_in, "output_length": n_out,
                                 "hash_ids": ids}) + "\n")
    with (out / "azure.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for ts, n_in, n_out in rows:
            micro = int(round(ts * 1e6))
            w.writerow([f"2025-05-01 12:{micro // 60_000_000:02d}:{(micro // 1_000_000) % 60:02d}."
                        f"{micro % 1_000_000:06d}0", n_in, n_out])
    with (out / "burstgpt.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"])
        for i, (ts, n_in, n_out) in enumerate(rows):
            failed = i % 25 == 24      # a failed request in the traced system: 0 response tokens
            w.writerow([ts, "ChatGPT", n_in, 0 if failed else n_out, n_in + (0 if failed else n_out),
                        "Conversation log"])


def main() -> int:
    out = ROOT / "scenarios" / "data"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261206)
    qa = write_datasets(out, rng)
    write_tokenizer(out, [t for p in qa for t in p])
    write_traces(out, random.Random(7))
    for f in sorted(out.iterdir()):
        print(f"{f.relative_to(ROOT)}  {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
