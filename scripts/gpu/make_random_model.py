"""Write a random-weight Llama shaped like SmolLM2-135M, with a word-level tokenizer, to a folder.

For GPU hosts with no model hub in reach, the real-engine runs serve this stand-in:
the same shapes (hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied
embeddings) give the same compute and memory per token as the real model. The tokenizer maps
whitespace-separated words ``w0 .. w49151`` one to one onto ids, so a prompt of N such words is N
tokens, which keeps the harness's input-length accounting exact.

    python3 scripts/gpu/make_random_model.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: str) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab_size = 49152
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(len(specials), vocab_size):
        vocab[f"w{i}"] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>",
                                   eos_token="<|endoftext|>", unk_token="<unk>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|> {{ m['content'] }} <|im_end|> "
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|> {% endif %}")
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=0, pad_token_id=0, torch_dtype="bfloat16")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    gen = {"bos_token_id": 1, "eos_token_id": 0, "pad_token_id": 0, "do_sample": False}
    (path / "generation_config.json").write_text(json.dumps(gen))
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {path}: {n / 1e6:.1f}M parameters, vocab {vocab_size}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smollm2-135m-random")
