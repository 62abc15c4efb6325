"""A learned reward as a reward function: a sequence-classification reward model from the registry scores
prompt + completion, the way the reward trainer saw its training pairs (conversational rows through the chat
template; standard rows as prompt + completion + EOS when the completion ended with EOS). A process reward model
(a prm version, trainer/prm.py) scores the completion step by step instead: ProcessRewardModelReward, whose
outcome is the minimum or the last step score (the reward entry's prm_outcome)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.models import load_reward, load_tokenizer
from trainer.rewards.rules import completion_text


def load_reward_model(path: str | Path, device: torch.device | str | None = None):
    """(model, tokenizer) of a seq-cls reward checkpoint, frozen in eval mode (clear error naming a missing path)."""
    tokenizer = load_tokenizer(path, role="reward model")
    model = load_reward(path, tokenizer=tokenizer)
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model, tokenizer


class RewardModelReward:
    """Scores completions with a reward model: f(prompts, completions, completion_ids=None, **columns)."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        policy_eos_token_id: int | None = None,
    ):
        """policy_eos_token_id: the policy's EOS id; a completion whose ids end with it gets the reward
        tokenizer's EOS appended (the decoded text has lost it), as reward training appends EOS to chosen/rejected."""
        self.__name__ = "reward_model"
        self.path = str(path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model, self.tokenizer = load_reward_model(path, self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.policy_eos_token_id = policy_eos_token_id

    def texts(self, prompts: list, completions: list, completion_ids: list | None = None) -> list[str]:
        """The exact strings the reward model reads."""
        texts = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if isinstance(prompt, list):  # conversational: the chat template closes each message itself
                if isinstance(completion, list):
                    messages = prompt + completion
                else:
                    messages = prompt + [{"role": "assistant", "content": completion_text(completion)}]
                texts.append(self.tokenizer.apply_chat_template(messages, tokenize=False))
                continue
            text = str(prompt) + completion_text(completion)
            ended = (
                completion_ids is not None
                and self.policy_eos_token_id is not None
                and len(completion_ids[i]) > 0
                and completion_ids[i][-1] == self.policy_eos_token_id
            )
            if ended and self.tokenizer.eos_token:
                text += self.tokenizer.eos_token
            texts.append(text)
        return texts

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            ).to(self.device)
            logits = self.model(**batch).logits[:, 0]
            scores.extend(float(x) for x in logits.float().cpu())
        return scores

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any
    ) -> list[float]:
        """Scores of the sequences trainer.encoding builds, as reward training and score jobs do (the tokenizer's
        own special tokens kept: [CLS] ... [SEP] on an encoder reward model), EOS where the completion ended."""
        from trainer.encoding import encode_sequence
        from trainer.models import reward_scores

        sequences = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            ended = isinstance(prompt, list) or (
                completion_ids is not None
                and self.policy_eos_token_id is not None
                and len(completion_ids[i]) > 0
                and completion_ids[i][-1] == self.policy_eos_token_id
            )
            value = completion if isinstance(prompt, list) else completion_text(completion)
            sequences.append(encode_sequence(prompt, value, self.tokenizer, self.max_length, add_eos=ended))
        return reward_scores(self.model, self.tokenizer, sequences, batch_size=self.batch_size)


class ProcessRewardModelReward:
    """Scores completions with a process reward model: each completion is cut into steps at the PRM's separator (a
    message list: one step per assistant message) and its reward is the min or last step's P(good)."""

    def __init__(self, path: str | Path, *, device: torch.device | str | None = None, batch_size: int = 32,
                 max_length: int | None = None, prm_outcome: str = "min",
                 policy_eos_token_id: int | None = None):  # fmt: skip
        """policy_eos_token_id is accepted (build_rewards passes it to every reward model) and unused: a PRM reads
        steps, not the end of the sequence."""
        from trainer.prm import ProcessRewardScorer

        self.__name__ = "reward_model"
        self.path = str(path)
        self.scorer = ProcessRewardScorer(path, device=device, outcome=prm_outcome, batch_size=batch_size,
                                          max_length=max_length)  # fmt: skip

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any
    ) -> list[float]:
        values = [completion if isinstance(completion, list) else completion_text(completion) for completion in completions]
        return self.scorer(prompts, values)
