"""Any local tokenizer made fit for training, and the one way prompt + completion become token ids.

    prepare_tokenizer(tokenizer, checkpoint, encoder=...) -> TokenizerSetup   (what was used or added, recorded)
    tokenizer_setup(tokenizer) -> TokenizerSetup                              (as prepared, or as found)
    encode_pair(prompt, completions, tokenizer, max_length) -> Encoded | None (None: a completion alone is too long)
    encode_sequence(prompt, completion, tokenizer, max_length) -> ids         (reward training, eval and scoring)
    encode_rows(rows, tokenizer, max_length, columns) -> (rows, Fit)         (cached on disk: TOKEN_CACHE_ENV)
    LengthGroupedBatches                                                     (trainer mixin: batches of like lengths)

Checkpoints differ in what their tokenizer brings, and each gap gets one documented answer:

* no chat template (most base LMs, every BERT-style encoder): message lists are rendered with PLAIN_CHAT_TEMPLATE,
  a plain-text transcript ("User: ...\\n\\nAssistant: ...<eos>"). It is saved with the trained tokenizer, so a
  model trained here scores and generates later with the same template; manifest and model card name it.
* no EOS: an encoder uses its SEP token (else CLS); a decoder gets a new EOS_TOKEN added (embeddings resized).
* no pad: a decoder pads with its EOS (attention masks tell them apart); an encoder gets PAD_TOKEN added.

Encoding (standard rows: prompt + completion + EOS; conversational rows: the chat template) keeps the tokenizer's
own special frame ([CLS] ... [SEP] on encoders, BOS on Llama-style decoders). A sequence longer than max_length
loses the START of its prompt: the end of the conversation and the whole completion are kept. Only a completion
that alone (with the special tokens) exceeds max_length cannot be kept; such rows are dropped and counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.threads import TOKEN_CACHE_ENV

PLAIN_TEMPLATE_NAME = "rankforge-plain-transcript-v1"
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)
"""The transcript template applied where a tokenizer has none: each message as "Role: content", messages
separated by a blank line, every assistant message closed by EOS; the generation prompt opens "Assistant:"."""
EOS_TOKEN = "<|rankforge_eos|>"
"""Added as EOS to a decoder tokenizer that has none (the model's embeddings grow by one row)."""
PAD_TOKEN = "[PAD]"
"""Added as pad token to an encoder tokenizer that has none."""

ENCODER_MODEL_TYPES = frozenset({
    "albert", "bert", "camembert", "convbert", "deberta", "deberta-v2", "distilbert", "electra", "ernie",
    "flaubert", "funnel", "ibert", "longformer", "mobilebert", "modernbert", "mpnet", "nezha", "roberta",
    "roberta-prelayernorm", "squeezebert", "xlm", "xlm-roberta", "xlm-roberta-xl", "xlnet", "nomic_bert",
})  # fmt: skip
"""Model types that are encoders (bidirectional): fit as reward models, never as policies."""


def is_encoder(config) -> bool:
    """True for BERT-, DeBERTa-, MiniLM-style (bidirectional) encoders."""
    return getattr(config, "model_type", None) in ENCODER_MODEL_TYPES and not getattr(
        config, "is_decoder", False
    )


@dataclass
class TokenizerSetup:
    """What a tokenizer brought and what was used in its place; recorded in manifest.json and the model card."""

    chat_template: str = "own"
    """"own" (the checkpoint's template) or PLAIN_TEMPLATE_NAME"""
    eos_token: str | None = None
    eos_source: str = "own"
    """own, sep, cls or added"""
    pad_token: str | None = None
    pad_source: str = "own"
    """own, eos or added"""
    added_tokens: list[str] = field(default_factory=list)
    """tokens added to the vocabulary (the model's embeddings were resized for them)"""
    encoder: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ATTRIBUTE = "_rankforge_setup"
PREPARED: dict[str, TokenizerSetup] = {}
"""Setups of the tokenizers prepared in this process, by checkpoint path (trainer.run records them)."""


def prepare_tokenizer(tokenizer, checkpoint: str = "", *, encoder: bool = False) -> TokenizerSetup:
    """Give the tokenizer a chat template, an EOS and a pad token where it lacks them (see the module doc)."""
    setup = TokenizerSetup(encoder=encoder)
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
        setup.chat_template = PLAIN_TEMPLATE_NAME
    elif template == PLAIN_CHAT_TEMPLATE:  # a checkpoint trained here earlier
        setup.chat_template = PLAIN_TEMPLATE_NAME
    if tokenizer.eos_token is None:
        if encoder and tokenizer.sep_token is not None:
            tokenizer.eos_token, setup.eos_source = tokenizer.sep_token, "sep"
        elif encoder and tokenizer.cls_token is not None:
            tokenizer.eos_token, setup.eos_source = tokenizer.cls_token, "cls"
        else:
            tokenizer.add_special_tokens({"eos_token": EOS_TOKEN})
            setup.eos_source = "added"
            setup.added_tokens.append(EOS_TOKEN)
    if tokenizer.pad_token is None:
        if encoder:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
            setup.pad_source = "added"
            setup.added_tokens.append(PAD_TOKEN)
        else:
            tokenizer.pad_token, setup.pad_source = tokenizer.eos_token, "eos"
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer of {checkpoint or 'the checkpoint'} cannot encode its EOS or pad token "
            f"({tokenizer.eos_token!r}, {tokenizer.pad_token!r}); fix its tokenizer files"
        )
    setup.eos_token, setup.pad_token = tokenizer.eos_token, tokenizer.pad_token
    setattr(tokenizer, _ATTRIBUTE, setup)
    if checkpoint:
        PREPARED[checkpoint] = setup
    return setup


def tokenizer_setup(tokenizer) -> TokenizerSetup:
    """The setup prepare_tokenizer recorded on this tokenizer (a plain one when it was never prepared)."""
    setup = getattr(tokenizer, _ATTRIBUTE, None)
    if setup is None:
        plain = getattr(tokenizer, "chat_template", None) == PLAIN_CHAT_TEMPLATE
        setup = TokenizerSetup(
            chat_template=PLAIN_TEMPLATE_NAME if plain else "own",
            eos_token=tokenizer.eos_token,
            pad_token=tokenizer.pad_token,
        )
    return setup


def is_conversational(value: Any) -> bool:
    """True for a list of {role, content} messages."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def as_messages(completion: Any) -> list[dict[str, str]]:
    if is_conversational(completion):
        return list(completion)
    return [{"role": "assistant", "content": completion}]


def completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion)


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS] / [SEP], BOS / nothing, ...)."""
    cached = getattr(tokenizer, "_rankforge_frame", None)
    if cached is not None:
        return cached
    inner = list(tokenizer("hello", add_special_tokens=False)["input_ids"])
    outer = list(tokenizer("hello", add_special_tokens=True)["input_ids"])
    frame: tuple[list[int], list[int]] = ([], [])
    for start in range(len(outer) - len(inner) + 1):
        if outer[start : start + len(inner)] == inner:
            frame = (outer[:start], outer[start + len(inner) :])
            break
    tokenizer._rankforge_frame = frame
    return frame


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def split_prompt_completion(
    prompt: Any, completion: Any, tokenizer, *, add_eos: bool = True
) -> tuple[list[int], list[int], list[int]]:
    """(head, prompt body, completion) token ids: head is the tokenizer's leading special tokens (never
    truncated); the completion includes EOS and trailing special tokens."""
    before, after = special_frame(tokenizer)
    eos_id = tokenizer.eos_token_id
    if is_conversational(prompt):
        prompt_text = _render(tokenizer, list(prompt), True)
        full_text = _render(tokenizer, list(prompt) + as_messages(completion), False)
        if not full_text.startswith(prompt_text):  # a template that renders the prompt differently alone
            cut = next(
                (i for i, (a, b) in enumerate(zip(prompt_text, full_text, strict=False)) if a != b),
                len(prompt_text),
            )
            prompt_text = full_text[:cut]
        completion_ids = _ids(tokenizer, full_text[len(prompt_text) :])
        if tokenizer_setup(tokenizer).chat_template == "own":
            return (
                [],
                _ids(tokenizer, prompt_text),
                completion_ids,
            )  # the template writes its own special tokens
        if after and completion_ids[-len(after) :] != list(after):  # the template's EOS may already be SEP
            completion_ids += list(after)
        return list(before), _ids(tokenizer, prompt_text), completion_ids
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")
    completion_ids = _ids(tokenizer, completion_text(completion))
    ends = completion_ids[-1:] == [eos_id] or (after and eos_id in after)
    if add_eos and not ends and eos_id is not None:
        completion_ids.append(eos_id)
    return list(before), _ids(tokenizer, prompt), completion_ids + list(after)


@dataclass
class Encoded:
    """A prompt and its completions, ready for a trainer: prompt_ids includes the head special tokens."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    truncated: bool
    """True when the prompt lost tokens at its start to fit max_length"""


def encode_pair(
    prompt: Any, completions: list[Any], tokenizer, max_length: int | None, *, add_eos: bool = True
) -> Encoded | None:
    """Prompt + each completion so that len(prompt_ids) + len(any completion) <= max_length, cutting the prompt's
    start when needed. None when the longest completion alone (with the head) exceeds max_length."""
    head: list[int] = []
    body: list[int] = []
    outs = []
    for completion in completions:
        head, body, completion_ids = split_prompt_completion(prompt, completion, tokenizer, add_eos=add_eos)
        outs.append(completion_ids)
    if not outs:
        raise ValueError("encode_pair needs at least one completion")
    if max_length is None:
        return Encoded(head + body, outs, False)
    room = max_length - len(head) - max(len(c) for c in outs)
    if room < 0:
        return None
    truncated = len(body) > room
    if truncated:
        body = body[len(body) - room :]
    return Encoded(head + body, outs, truncated)


def encode_sequence(
    prompt: Any, completion: Any, tokenizer, max_length: int | None = None, *, add_eos: bool = True
) -> list[int]:
    """Token ids of prompt + completion as reward training saw them; longer than max_length: the prompt's start
    is cut, and a completion that alone is too long keeps its last max_length tokens (scoring never fails)."""
    encoded = encode_pair(prompt, [completion], tokenizer, max_length, add_eos=add_eos)
    if encoded is None:
        head, _body, completion_ids = split_prompt_completion(prompt, completion, tokenizer, add_eos=add_eos)
        keep = max(max_length - len(head), 1)
        return (head + completion_ids[-keep:])[-max_length:]
    return encoded.prompt_ids + encoded.completion_ids[0]


def effective_max_length(max_length: int | None, config, tokenizer=None) -> int | None:
    """max_length, capped at what the model can read: its position embeddings (RoBERTa-style: less the 2 it
    reserves) and the tokenizer's model_max_length when that is a real limit."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions:
        offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(int(positions) - offset)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max and model_max < 10**6:
        limits.append(int(model_max))
    if max_length:
        limits.append(max_length)
    return min(limits) if limits else None


@dataclass
class Fit:
    """How rows fared against max_length: kept whole, kept with the prompt's start cut, or dropped."""

    total: int = 0
    truncated: int = 0
    dropped: int = 0
    from_cache: bool = False
    """True when the token ids were read from the tokenization cache rather than computed"""

    @property
    def used(self) -> int:
        return self.total - self.dropped

    def metrics(self, unit: str) -> dict[str, int]:
        return {f"train/{unit}": self.total, f"train/{unit}_used": self.used,
                f"train/{unit}_truncated": self.truncated, f"train/{unit}_dropped": self.dropped}  # fmt: skip


ENCODING_VERSION = 1
"""Part of every cache key: raise it whenever encode_pair's output changes, so older cache entries are not read."""


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A digest of everything that decides the token ids: the fast tokenizer's whole definition (vocabulary,
    merges, normalizer, added tokens), the chat template, the special tokens and the setup; None for a slow
    tokenizer (such rows are not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256(backend.to_str().encode("utf-8"))
    facts = [type(tokenizer).__name__, getattr(tokenizer, "chat_template", None), tokenizer.eos_token_id,
             tokenizer.pad_token_id, special_frame(tokenizer), tokenizer_setup(tokenizer).to_dict()]  # fmt: skip
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def _cache_key(rows: list[dict[str, Any]], tokenizer, max_length: int | None, columns: tuple[str, ...]) -> str | None:
    """The cache entry of these rows' encodings: their prompts and completions (the content itself, so a
    snapshot, a split, an order or a shuffle is told apart for free), the tokenizer, max_length, the encoding."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return None
    digest = hashlib.sha256(json.dumps([ENCODING_VERSION, fingerprint, max_length, columns]).encode("utf-8"))
    for row in rows:
        digest.update(json.dumps([row["prompt"], *(row[c] for c in columns)], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _read_cached(path: Path) -> list[Encoded | None] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [None if item is None else Encoded(item[0], item[1], bool(item[2])) for item in raw]


def _write_cached(path: Path, encodings: list[Encoded | None]) -> None:
    """Atomic: a temp file in the same directory, renamed into place (concurrent writers write the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = [None if e is None else [e.prompt_ids, e.completion_ids, e.truncated] for e in encodings]
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(raw, out, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def encode_all(
    rows: list[dict[str, Any]], tokenizer, max_length: int | None, columns: tuple[str, ...],
    cache_dir: str | Path | None = None,
) -> tuple[list[Encoded | None], bool]:  # fmt: skip
    """encode_pair of every row (None: does not fit), read from the cache under cache_dir (default: the
    TOKEN_CACHE_ENV directory) when these rows were encoded before; returns (encodings, from_cache)."""
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(TOKEN_CACHE_ENV)
    key = _cache_key(rows, tokenizer, max_length, columns) if cache_dir and rows else None
    path = Path(cache_dir) / f"{key}.json" if key else None
    if path is not None and path.is_file():
        cached = _read_cached(path)
        if cached is not None and len(cached) == len(rows):
            return cached, True
    encodings = [encode_pair(row["prompt"], [row[c] for c in columns], tokenizer, max_length) for row in rows]
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only or full store: the job goes on without the cache
            _write_cached(path, encodings)
    return encodings, False


def encode_rows(
    rows: list[dict[str, Any]], tokenizer, max_length: int | None, completion_columns: tuple[str, ...],
    cache_dir: str | Path | None = None,
) -> tuple[list[dict[str, Any]], Fit]:  # fmt: skip
    """Each row's prompt and completions (the named columns) as token ids, the prompt cut at its start to fit:
    rows become {prompt_ids, <column>_ids..., other columns}; rows that cannot fit are left out and counted.
    The token ids come from the tokenization cache when the same rows met the same tokenizer before."""
    encodings, from_cache = encode_all(rows, tokenizer, max_length, completion_columns, cache_dir)
    fit = Fit(total=len(rows), from_cache=from_cache)
    encoded_rows = []
    for row, encoded in zip(rows, encodings, strict=True):
        if encoded is None:
            fit.dropped += 1
            continue
        fit.truncated += encoded.truncated
        item = {k: v for k, v in row.items() if k != "prompt" and k not in completion_columns}
        item["prompt_ids"] = encoded.prompt_ids
        for column, ids in zip(completion_columns, encoded.completion_ids, strict=True):
            item[f"{column}_ids"] = ids
        encoded_rows.append(item)
    return encoded_rows, fit


def padded_length(row: dict[str, Any]) -> int:
    """Tokens an encoded row takes in a batch: its prompt plus its longest completion (a pair's chosen and
    rejected sequences are padded to the same width)."""
    completions = [len(ids) for name, ids in row.items() if name.endswith("_ids") and name != "prompt_ids"]
    return len(row.get("prompt_ids") or []) + max(completions, default=0)


class LengthGroupedBatches:
    """Mixin for a transformers Trainer on encoded rows: training batches of rows of similar length.

    TRL pads every batch to its longest row, so with random batches one long (truncated) pair pads the whole
    batch to max_length. The sampler is transformers' LengthGroupedSampler (random mega-batches of up to 50 global
    batches, each sorted by length: the order stays random at the scale of an epoch), seeded with the run's data
    seed.
    Set `row_lengths` (padded_length of each training row, in the dataset's order) before training; without
    it the trainer samples as it would have.
    """

    row_lengths: list[int] | None = None

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = self.row_lengths
        if lengths is None or dataset is None or len(lengths) != len(dataset):
            return super()._get_train_sampler(train_dataset)
        import torch
        from transformers.trainer_pt_utils import LengthGroupedSampler

        # Grouped by the global batch (every process, every accumulation step): the same order and the same global
        # batches whatever the process count; accelerate then deals each process its share of each batch.
        args = self.args
        seed = args.data_seed if args.data_seed is not None else args.seed
        return LengthGroupedSampler(
            args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size),
            lengths=list(lengths), generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
