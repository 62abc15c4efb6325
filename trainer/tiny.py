"""Tiny models built locally from configs (no hub, no download): for tests, demos and CPU benches.

    train_tokenizer(texts, vocab_size=1024) -> PreTrainedTokenizerFast   byte-level BPE trained on `texts`
    build_tiny_policy(out_dir, texts_or_tokenizer, ...) -> Path          LlamaForCausalLM, random init
    build_tiny_reward(out_dir, texts_or_tokenizer, ...) -> Path          LlamaForSequenceClassification, 1 label

    build_tiny_encoder(out_dir, texts, ...) -> Path      BertForMaskedLM + WordPiece tokenizer trained locally
                                                         (no EOS, no chat template: a classic reward-model base)
    build_tiny_gpt2(out_dir, texts, ...) -> Path         GPT2LMHeadModel + byte-level BPE with only <|endoftext|>
                                                         (no pad token, no chat template: a plain base LM)

    keyword_pairs(n, seed) / write_snapshot(dir, train, test)   a synthetic, learnable preference task

CLI: `python -m trainer.tiny OUT_DIR [--texts FILE.jsonl|FILE.txt]` writes OUT_DIR/policy and OUT_DIR/reward
(sharing one tokenizer) and prints one JSON line {"policy": path, "reward": path}.

The tokenizer is byte-level, so any text encodes (no <unk> in practice); <pad> is its own token, separate
from the EOS token </s>, so padding never masks a real end of sequence. The chat template is plain:

    <|system|>\\n...</s>\\n<|user|>\\n...</s>\\n<|assistant|>\\n...</s>\\n
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Used when no texts are given: enough English, digits and punctuation for the BPE merges to be useful.
_WORD_TEXT = (
    "the a an is are was be to of and in that it for on with as at by this from or not but what all were we when "
    "your can said there use each which she do how their if will up other about out many then them these so some "
    "her would make like him into time has look two more write go see number no way could people my than first "
    "water been call who oil its now find long down day did get come made may part answer question please thank "
    "you yes sure help explain why because good bad correct wrong sum plus minus equals result true false model "
    "hello world sorry cannot think step here list short long keyword reply assistant user system"
)
_WORDS = _WORD_TEXT.split()


def default_texts(n: int = 400) -> list[str]:
    """A small deterministic corpus of sentences and arithmetic (no randomness from outside)."""
    texts = []
    for i in range(n):
        words = [_WORDS[(i * 7 + j * 13) % len(_WORDS)] for j in range(8 + i % 9)]
        texts.append(" ".join(words).capitalize() + ("." if i % 3 else "?"))
        a, b = i % 50, (i * 7) % 50
        texts.append(f"What is {a} + {b}? The answer is {a + b}.")
    return texts


def _iter_strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)


def read_texts(path: str | Path) -> list[str]:
    """Texts from a .jsonl file (every string value of every row) or a plain text file (one text a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file not found: {path}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return [text for line in lines for text in _iter_strings(json.loads(line)) if text.strip()]
    return lines


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`, with <pad>/<s>/</s>/<unk>, role tokens and a chat template."""
    texts = [t for t in texts if t]
    if not texts:
        texts = default_texts()
    special_tokens = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=bpe_trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def _tokenizer_for(texts_or_tokenizer: Iterable[str] | PreTrainedTokenizerFast | None, vocab_size: int):
    if texts_or_tokenizer is None:
        return train_tokenizer(default_texts(), vocab_size=vocab_size)
    if hasattr(texts_or_tokenizer, "convert_tokens_to_ids"):
        return texts_or_tokenizer
    return train_tokenizer(texts_or_tokenizer, vocab_size=vocab_size)


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    **extra: object,
) -> LlamaConfig:
    """A Llama config sized for CPU tests, with the tokenizer's special token ids."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def build_tiny_policy(
    out_dir: str | Path,
    texts: Iterable[str] | PreTrainedTokenizerFast | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
) -> Path:
    """Write a randomly initialised LlamaForCausalLM + tokenizer to out_dir (save_pretrained layout)."""
    tokenizer = _tokenizer_for(texts, vocab_size)
    config = tiny_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return _save(model, tokenizer, out_dir)


def build_tiny_reward(
    out_dir: str | Path,
    texts: Iterable[str] | PreTrainedTokenizerFast | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
) -> Path:
    """Write a randomly initialised LlamaForSequenceClassification (num_labels=1, pad_token_id set) + tokenizer."""
    tokenizer = _tokenizer_for(texts, vocab_size)
    config = tiny_config(
        tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_labels=1
    )
    torch.manual_seed(seed)
    return _save(LlamaForSequenceClassification(config), tokenizer, out_dir)


def build_tiny_encoder(
    out_dir: str | Path,
    texts: Iterable[str] | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
    max_position_embeddings: int = 128,
) -> Path:
    """A BERT-style encoder (BertForMaskedLM, random init) with a WordPiece tokenizer trained on `texts`: [CLS],
    [SEP], [PAD], [UNK], [MASK], lower-casing, no EOS and no chat template, as bert-base-uncased ships."""
    from tokenizers import normalizers, processors
    from transformers import BertConfig, BertForMaskedLM

    texts = [t for t in (texts or default_texts()) if t]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    word_piece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    word_piece.normalizer = normalizers.BertNormalizer(lowercase=True)
    word_piece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_piece.decoder = decoders.WordPiece()
    word_piece.train_from_iterator(
        texts, trainer=trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    )
    cls_id, sep_id = word_piece.token_to_id("[CLS]"), word_piece.token_to_id("[SEP]")
    word_piece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_piece, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", model_max_length=max_position_embeddings,
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save(BertForMaskedLM(config), tokenizer, out_dir)


def build_tiny_gpt2(
    out_dir: str | Path,
    texts: Iterable[str] | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
) -> Path:
    """A GPT-2-style decoder (GPT2LMHeadModel, random init) with a byte-level BPE tokenizer whose only special
    token is <|endoftext|> (BOS = EOS = UNK): no pad token and no chat template, as gpt2 ships."""
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = [t for t in (texts or default_texts()) if t]
    end = "<|endoftext|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[end], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    ))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=end, eos_token=end, unk_token=end, model_max_length=1024
    )
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=1024,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), tokenizer, out_dir)


def _save(model, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """model + tokenizer as one save_pretrained directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


KEYWORD = "please"
_TOPICS = [
    "cats",
    "rain",
    "trains",
    "bread",
    "music",
    "rivers",
    "chess",
    "tea",
    "maps",
    "stars",
    "boats",
    "snow",
]
_FILLERS = [w for w in _WORDS if w != KEYWORD and len(w) > 2]


def keyword_pairs(n: int, seed: int = 0, *, conversational: bool = False) -> list[dict]:
    """Preference pairs whose chosen completion contains KEYWORD and whose rejected one does not.

    Chosen and rejected share every word but one: at a random position the chosen completion says "please",
    the rejected one a filler word. A reward model or DPO policy that learns the property generalises to new
    rows. Rows carry the snapshot metadata columns (comparison_id, prompt_id, margin, weight, ...).
    """
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        topic = rng.choice(_TOPICS)
        prompt_text = f"Write a short reply about {topic}."
        words = [rng.choice(_FILLERS) for _ in range(rng.randint(4, 8))]
        position = rng.randint(0, len(words))
        chosen = " ".join(words[:position] + [KEYWORD] + words[position:])
        rejected = " ".join(words[:position] + [rng.choice(_FILLERS)] + words[position:])
        prompt: str | list = (
            prompt_text + "\n" if not conversational else [{"role": "user", "content": prompt_text}]
        )
        if conversational:
            chosen_value: str | list = [{"role": "assistant", "content": chosen}]
            rejected_value: str | list = [{"role": "assistant", "content": rejected}]
        else:
            chosen_value, rejected_value = chosen, rejected
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen_value,
                "rejected": rejected_value,
                "comparison_id": seed * 100_000 + index,
                "prompt_id": _TOPICS.index(topic),
                "chosen_id": 2 * index,
                "rejected_id": 2 * index + 1,
                "chosen_model": "synthetic",
                "rejected_model": "synthetic",
                "margin": 1,
                "agreement": 1.0,
                "n_votes": 1,
                "weight": 1.0,
            }
        )
    return rows


def attribute_rows(n_comparisons: int, seed: int = 0) -> list[dict]:
    """Ratings rows (the `ratings` export's shape) with two planted attributes, two completions per comparison:
    ``helpful`` is 5 when the completion contains KEYWORD and 1 otherwise; ``verbose`` grows with its length
    (1 for 2-3 words ... 5 for 10-11). The better helpful score ranks first (rank 0); equal ones tie."""
    rng = random.Random(seed)
    rows = []
    for index in range(n_comparisons):
        topic = rng.choice(_TOPICS)
        prompt = f"Write a short reply about {topic}.\n"
        with_keyword = rng.random() < 0.5
        options = []
        for keyword in (with_keyword, not with_keyword):
            length = rng.randint(2, 11)
            words = [rng.choice(_FILLERS) for _ in range(length)]
            if keyword:
                words[rng.randrange(length)] = KEYWORD
            options.append((keyword, length, " ".join(words)))
        for position, (keyword, length, text) in enumerate(options):
            rows.append({
                "prompt": prompt, "completion": text, "comparison_id": seed * 100_000 + index,
                "prompt_id": _TOPICS.index(topic), "completion_id": 2 * index + position, "model": "synthetic",
                "agreement": 1.0, "n_votes": 1, "weight": 1.0, "is_gold": False,
                "rank": 0 if keyword else 1, "helpful": 5.0 if keyword else 1.0, "verbose": float(1 + (length - 2) // 2),
            })  # fmt: skip
    return rows


def keyword_texts(rows: list[dict]) -> list[str]:
    """Every string in the rows, plus the default corpus: tokenizer training texts for the synthetic task."""
    return [text for row in rows for text in _iter_strings(row)] + default_texts(100)


def write_snapshot(out_dir: str | Path, splits: dict[str, list[dict]], fmt: str = "pairs") -> Path:
    """Write a dataset snapshot directory (split.jsonl files + manifest.json) as the app's export does."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, digest = {}, hashlib.sha256()
    for split, rows in splits.items():
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        (out_dir / f"{split}.jsonl").write_bytes(data)
        files[f"{split}.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        digest.update(f"{split}.jsonl".encode() + data)
    manifest = {
        "id": out_dir.name,
        "format": fmt,
        "spec": {"source": "trainer.tiny synthetic"},
        "rows": {split: len(rows) for split, rows in splits.items()},
        "files": files,
        "sha256": digest.hexdigest(),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="writes OUT_DIR/policy and OUT_DIR/reward")
    parser.add_argument("--texts", type=Path, help=".jsonl (all string values) or .txt (one text a line)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    texts = read_texts(args.texts) if args.texts else default_texts()
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size)
    policy = build_tiny_policy(args.out_dir / "policy", tokenizer, seed=args.seed)
    reward = build_tiny_reward(args.out_dir / "reward", tokenizer, seed=args.seed)
    print(json.dumps({"policy": str(policy.resolve()), "reward": str(reward.resolve())}), flush=True)


if __name__ == "__main__":
    main()
