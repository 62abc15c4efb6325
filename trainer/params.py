"""Hyperparameters of every job kind: one dataclass per kind, a docstring under every field.

Torch-free on purpose: the web app imports this module to show defaults and validate a job's params
before queueing it, and the web process never imports torch.

    KIND_INFO[kind] -> Kind (args, entry point, output, data it reads, key params)   KINDS -> every kind
    ARGS[kind] -> the Args dataclass      DEFAULTS[kind] -> {field: default}
    FIELD_DOCS[kind] -> {field: docstring}  parse_params(kind, params) -> Args (clear error on unknown keys)

Defaults suit tiny models on CPU (each kind finishes in seconds on a few hundred rows). For pretrained models
of 100M+ parameters lower the learning rates (about 1e-5 for reward models, 5e-7..5e-6 for DPO/KTO).
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trainer.results import MODEL_KINDS


@dataclass
class TrainArgs:
    """Fields shared by every kind that trains a model."""

    learning_rate: float = 1e-3
    """peak learning rate of AdamW"""
    num_train_epochs: float = 1.0
    """passes over the training split (ignored when max_steps > 0)"""
    max_steps: int = -1
    """if > 0: train exactly this many optimizer steps, overriding num_train_epochs"""
    per_device_train_batch_size: int = 8
    """rows per device per forward pass"""
    per_device_eval_batch_size: int = 16
    """rows per device per forward pass when evaluating on the held-out split"""
    gradient_accumulation_steps: int = 1
    """forward passes accumulated into one optimizer step (effective batch = batch size x this x devices)"""
    lr_scheduler_type: str = "linear"
    """learning-rate schedule after warmup: linear, cosine, constant, constant_with_warmup, ..."""
    warmup_steps: float = 0.0
    """linear warmup: an integer number of steps, or a float in [0, 1) as a share of all steps"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    max_length: int = 512
    """longest tokenized sequence (prompt + completion); longer rows are truncated or dropped"""
    logging_steps: int = 5
    """emit a metrics event every this many optimizer steps"""
    bf16: bool | None = None
    """bfloat16 mixed precision; None: on for GPUs that support it, off on CPU"""
    activation_checkpointing: bool = False
    """recompute activations in the backward pass (gradient checkpointing): less memory, about 20% slower"""
    eval_split: str = "test"
    """snapshot split used for held-out metrics (empty string: skip held-out evaluation)"""
    use_lora: bool = False
    """train a LoRA adapter (peft) instead of every weight; the output is the adapter, registered with its base"""
    lora_r: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)"""
    lora_dropout: float = 0.05
    """dropout on the LoRA branch"""
    lora_target_modules: str | list | None = "all-linear"
    """modules that get adapters: "all-linear" (every linear layer but the output head), or a list of names"""
    load_in_4bit: bool = False
    """QLoRA: load the base weights in 4 bits (needs CUDA and bitsandbytes; implies use_lora)"""
    merge_adapter: bool = False
    """with use_lora: merge the trained adapter into the base weights and write a full checkpoint instead"""


@dataclass
class RewardArgs(TrainArgs):
    """Bradley-Terry reward model: loss = -w * log sigmoid(r_chosen - r_rejected - margin_coefficient * margin)."""

    num_train_epochs: float = 3.0
    """passes over the training split (ignored when max_steps > 0)"""
    margin_coefficient: float = 0.0
    """scale of the pair's rank margin (distance between tie groups, >= 1) inside the loss; 0 disables margins"""
    use_weights: bool = True
    """weight each pair's loss by its snapshot `weight` (vote agreement x rater reliability) when present"""
    center_rewards_coefficient: float = 0.0
    """pull rewards towards mean zero: adds coef * mean((r_chosen + r_rejected)^2); 0 disables"""
    group_by_length: bool = True
    """training batches of pairs of similar length (less padding: faster); False: transformers' seeded random
    order, as a plain TRL RewardTrainer script samples (bench/parity.py compares like with like with it)"""


@dataclass
class MultiRewardArgs(TrainArgs):
    """Multi-objective reward model on a ratings snapshot: one regression head per attribute plus a Bradley-Terry
    preference head on one backbone, folded into one scalar with the attribute weights (trainer/reward_multi.py)."""

    num_train_epochs: float = 3.0
    """passes over the training split (ignored when max_steps > 0)"""
    attribute_weights: dict = field(default_factory=dict)
    """weight of each attribute head in the scalar reward, {attribute: weight}; a missing attribute weighs 1.0 (the
    app fills in the project's attribute weights)"""
    preference_weight: float = 1.0
    """weight of the preference (Bradley-Terry) head in the scalar reward"""
    regression_coefficient: float = 1.0
    """weight of the attribute regression loss against the preference loss while training"""


@dataclass
class DPOArgs(TrainArgs):
    """Direct Preference Optimization against the frozen base policy."""

    learning_rate: float = 5e-4
    """peak learning rate of AdamW"""
    num_train_epochs: float = 3.0
    """passes over the training split (ignored when max_steps > 0)"""
    beta: float = 0.1
    """strength of the implicit KL penalty towards the reference (base) policy; higher stays closer"""
    loss_type: str = "sigmoid"
    """TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, bco_pair, apo_zero, ..."""
    label_smoothing: float = 0.0
    """assumed share of flipped preference labels (robust / conservative DPO); 0 trusts every label"""
    precompute_ref_log_probs: bool = True
    """compute the reference log-probs once before training instead of keeping a reference model in memory"""


@dataclass
class KTOArgs(TrainArgs):
    """Kahneman-Tversky Optimization on unpaired desirable / undesirable completions."""

    learning_rate: float = 5e-4
    """peak learning rate of AdamW"""
    num_train_epochs: float = 3.0
    """passes over the training split (ignored when max_steps > 0)"""
    beta: float = 0.1
    """strength of the implicit KL penalty towards the reference (base) policy; higher stays closer"""
    desirable_weight: float = 1.0
    """loss weight of desirable (label true) rows, to balance unequal counts"""
    undesirable_weight: float = 1.0
    """loss weight of undesirable (label false) rows, to balance unequal counts"""
    precompute_ref_log_probs: bool = True
    """compute the reference log-probs once before training instead of keeping a reference model in memory"""


# PPO / GRPO / RLOO: placeholders owned by the engineer writing trainer/ppo.py and trainer/grpo.py, who fills
# in their fields (a docstring under each one). Keep them dataclasses inheriting TrainArgs so DEFAULTS works.
@dataclass
class PPOArgs(TrainArgs):
    """InstructGPT-style PPO against a learned reward model (trainer/ppo.py).

    One update = sample a rollout batch of prompts, generate responses, score them, then num_ppo_epochs passes
    of clipped policy + value updates over it. Rollout batch = per_device_train_batch_size x
    gradient_accumulation_steps x num_mini_batches responses.
    """

    learning_rate: float = 3e-4
    """peak learning rate of AdamW for policy and value model (tiny models; about 1e-6..3e-6 for real ones)"""
    num_train_epochs: float = 1.0
    """passes over the training prompts, one response per prompt and pass (ignored when max_steps > 0)"""
    max_steps: int = -1
    """if > 0: run exactly this many PPO updates (rollout batches), overriding num_train_epochs"""
    per_device_train_batch_size: int = 8
    """responses per forward/backward pass in the PPO update"""
    per_device_eval_batch_size: int = 16
    """prompts per generate() call when sampling for the before/after evaluation"""
    num_mini_batches: int = 1
    """optimizer steps per PPO epoch: the rollout batch is split into this many mini-batches"""
    num_ppo_epochs: int = 4
    """passes of PPO updates over each rollout batch"""
    max_length: int = 512
    """longest prompt + response in tokens: prompts keep their last (max_length - max_new_tokens) tokens"""
    max_new_tokens: int = 32
    """longest sampled response in tokens (a response cut here has no EOS: see missing_eos_penalty)"""
    temperature: float = 0.7
    """sampling temperature; log-probs of policy and reference use logits divided by it too"""
    kl_coef: float = 0.05
    """initial weight of the per-token KL penalty (policy vs frozen reference) inside the reward"""
    adaptive_kl: bool = True
    """adapt kl_coef so the KL per response approaches target_kl (Ziegler et al. 2019 controller)"""
    target_kl: float = 6.0
    """KL per response (nats, summed over its tokens) the adaptive controller steers towards"""
    kl_horizon: int = 10000
    """adaptive controller horizon in responses: larger adapts kl_coef more slowly"""
    missing_eos_penalty: float = 1.0
    """subtracted from the score of a response that hit max_new_tokens without EOS; 0 disables"""
    gamma: float = 1.0
    """discount factor of GAE"""
    lam: float = 0.95
    """lambda of GAE (bias/variance trade-off of the advantage estimate)"""
    cliprange: float = 0.2
    """policy ratio clip range of the surrogate objective"""
    cliprange_value: float = 0.2
    """value predictions may move at most this far from the rollout values (clipped value loss)"""
    vf_coef: float = 0.1
    """weight of the value loss in the total loss"""
    whiten_rewards: bool = False
    """whiten the per-token rewards of each rollout batch before GAE (advantages are always whitened)"""
    eval_prompts: int = 16
    """prompts held out of training to score fresh samples before and after (from eval_split when the
    snapshot has one); 0: none held out, up to 16 training prompts are scored instead"""


@dataclass
class GRPOArgs(TrainArgs):
    """Group Relative Policy Optimization with weighted reward functions (trainer/grpo.py, TRL GRPOTrainer).

    Each prompt gets num_generations completions; a completion's advantage is its reward relative to its group.
    per_device_train_batch_size x gradient_accumulation_steps must be a multiple of num_generations.
    """

    learning_rate: float = 3e-4
    """peak learning rate of AdamW (tiny models; about 1e-6 for real ones)"""
    per_device_train_batch_size: int = 16
    """completions per device per forward pass (a multiple of num_generations, or accumulate to one)"""
    rewards: list | None = None
    """weighted reward functions, e.g. [{"name": "reward_model", "weight": 1.0}, {"name": "exact_match",
    "weight": 0.5, "answer_field": "answer"}]; names: reward_model, exact_match, numeric_match, regex,
    json_schema, length_penalty (see trainer/rewards); null: the spec's reward_model alone"""
    num_generations: int = 8
    """completions sampled per prompt (the group)"""
    max_completion_length: int = 32
    """longest sampled completion in tokens"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling threshold; 1 disables"""
    top_k: int = 0
    """keep only the top_k most likely tokens when sampling; 0 disables"""
    beta: float = 0.04
    """weight of the KL penalty towards the frozen reference policy; 0 skips the reference (no KL metric)"""
    epsilon: float = 0.2
    """clip range of the policy ratio"""
    num_iterations: int = 1
    """policy updates per generated batch"""
    loss_type: str = "dapo"
    """TRL GRPO loss aggregation: dapo, grpo, dr_grpo, bnpo, cispo, sapo"""
    scale_rewards: str = "group"
    """divide advantages by the reward std of the group, the batch, or none"""
    multi_objective_aggregation: str = "sum_then_normalize"
    """how several rewards combine: sum_then_normalize, or normalize_then_sum (GDPO)"""
    mask_truncated_completions: bool = False
    """leave completions that hit max_completion_length out of the loss"""
    use_vllm: str = "auto"
    """sample with vLLM (TRL's use_vllm, colocated): auto (when vLLM is installed and a GPU is present), on, off"""
    eval_prompts: int = 16
    """prompts held out of training to score fresh samples before and after (from eval_split when the
    snapshot has one); 0: none held out, up to 16 training prompts are scored instead"""


@dataclass
class RLOOArgs(TrainArgs):
    """REINFORCE Leave-One-Out with weighted reward functions (trainer/grpo.py, TRL RLOOTrainer).

    A completion's baseline is the mean reward of the other completions of its prompt.
    per_device_train_batch_size x gradient_accumulation_steps must be a multiple of num_generations.
    """

    learning_rate: float = 3e-4
    """peak learning rate of AdamW (tiny models; about 1e-6 for real ones)"""
    per_device_train_batch_size: int = 16
    """completions per device per forward pass (a multiple of num_generations, or accumulate to one)"""
    rewards: list | None = None
    """weighted reward functions (same format as grpo's); null: the spec's reward_model alone"""
    num_generations: int = 8
    """completions sampled per prompt (at least 2: each one's baseline is the others' mean)"""
    max_completion_length: int = 32
    """longest sampled completion in tokens"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling threshold; 1 disables"""
    top_k: int = 0
    """keep only the top_k most likely tokens when sampling; 0 disables"""
    beta: float = 0.05
    """weight of the KL penalty towards the frozen reference policy; 0 skips the reference (no KL metric)"""
    epsilon: float = 0.2
    """clip range of the policy ratio"""
    num_iterations: int = 1
    """policy updates per generated batch"""
    normalize_advantages: bool = False
    """scale the advantages of each generation batch to mean 0, std 1"""
    mask_truncated_completions: bool = False
    """leave completions that hit max_completion_length out of the loss"""
    use_vllm: str = "auto"
    """sample with vLLM (TRL's use_vllm, colocated): auto (when vLLM is installed and a GPU is present), on, off"""
    eval_prompts: int = 16
    """prompts held out of training to score fresh samples before and after (from eval_split when the
    snapshot has one); 0: none held out, up to 16 training prompts are scored instead"""


PRM_OUTCOMES = ("min", "last")
"""How a process reward model's step scores become one outcome: the minimum step score, or the last step's."""


@dataclass
class PRMArgs(TrainArgs):
    """Process reward model on a stepwise snapshot (trainer/prm.py): a two-label token classifier (bad / good) learns
    each step's label at the separator that ends it (Math-Shepherd, TRL's former PRMTrainer)."""

    num_train_epochs: float = 3.0
    """passes over the training split (ignored when max_steps > 0)"""
    step_separator: str = "\n\n"
    """text put after every step; the step's label sits on its last token (a separator that encodes to no token,
    e.g. whitespace on a WordPiece tokenizer, is replaced by the tokenizer's SEP or EOS). Scoring a completion cuts
    it into steps here too. Default a blank line: the stepwise export's step texts hold single newlines"""
    train_on_last_step_only: bool = False
    """learn only each trajectory's last labelled step (the first error, or the final step of a good trajectory)"""
    bad_step_weight: float = 1.0
    """weight of a bad step's loss against a good step's (bad steps are few: most trajectories have none, and the
    stepwise export ends each at its first error); above 1 keeps the model from settling on calling every step good"""
    validation_share: float = 0.1
    """model selection: this share of the train split's trajectories is held out of training (by prompt when the
    split has at least 20 distinct prompts, else by trajectory), the model is scored on them after every epoch,
    and the job keeps the weights of the epoch best on validation_metric (reported as validation/...,
    validation/best_epoch); only with at least 100 training trajectories; 0 trains on all and keeps the last epoch.
    The snapshot's test split (eval_split) is never used for this"""
    validation_metric: str = "first_error_accuracy"
    """what picks the epoch: first_error_accuracy, step_accuracy, outcome_auroc (highest) or loss (the validation
    steps' mean cross-entropy, lowest); a tie keeps the later epoch"""
    restarts: int = 1
    """best of k: train this many times from the base (training seeds seed, seed + 1, ...) and keep the run whose kept
    epoch is best on validation_metric (a tie keeps the earlier run; reported as validation/restart, counted from 0,
    and validation/restarts); k times the training time. Needs validation trajectories (validation_share): without
    them one run"""

    def __post_init__(self) -> None:
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or not 1 <= self.restarts <= 16:
            raise ValueError(f"param 'restarts' must be an integer from 1 to 16, got {self.restarts!r}")
        if not 0 <= self.validation_share < 1:
            raise ValueError(f"param 'validation_share' must be in [0, 1), got {self.validation_share}")
        if self.validation_metric not in ("first_error_accuracy", "loss", "step_accuracy", "outcome_auroc"):
            raise ValueError("param 'validation_metric' must be one of first_error_accuracy, loss, step_accuracy, "
                             f"outcome_auroc, got {self.validation_metric!r}")


@dataclass
class GenerateArgs:
    """Sample completions from a policy for every prompt."""

    num_completions: int = 2
    """completions sampled per prompt"""
    temperature: float = 1.0
    """sampling temperature; 0 means greedy decoding (then all completions of a prompt are the same)"""
    top_p: float = 1.0
    """nucleus sampling: keep the smallest token set whose probability reaches top_p; 1 disables"""
    top_k: int = 0
    """keep only the top_k most likely tokens; 0 disables"""
    max_new_tokens: int = 64
    """longest completion in tokens; a completion cut here has finish_reason "length\""""
    batch_size: int = 8
    """prompts per generate() call"""
    max_prompt_length: int = 512
    """prompts longer than this many tokens keep their last max_prompt_length tokens"""
    backend: str = "auto"
    """auto (vLLM when it is installed and a GPU is present, else transformers), transformers or vllm"""
    reference_model: str = ""
    """path of a reference policy (e.g. the one this policy was trained from): each completion's log-probability
    under the policy minus under the reference is recorded, and their mean (a sample estimate of the KL divergence
    of the policy to the reference on these prompts) is reported as generate/kl_to_reference; empty: not measured"""


@dataclass
class ScoreArgs:
    """Score completions with a reward model."""

    batch_size: int = 16
    """(prompt, completion) sequences per forward pass"""
    max_length: int = 1024
    """longest tokenized prompt + completion; longer ones keep their last max_length tokens"""
    prm_outcome: str = "min"
    """with a process reward model (a prm version): a completion's score is its minimum step score (min) or its last
    step's (last); the completion is cut into steps at the PRM's step separator"""

    def __post_init__(self) -> None:
        if self.prm_outcome not in PRM_OUTCOMES:
            raise ValueError(f"param 'prm_outcome' must be one of {', '.join(PRM_OUTCOMES)}, got {self.prm_outcome!r}")


JUDGE_METHODS = ("reward", "generative", "rules", "prm")
"""How a judge decides: trainer/judge.py."""
_PAIR_SHOWN = """

Guidelines:
{guidelines}

Prompt:
{prompt}

Response A:
{response_a}

Response B:
{response_b}

"""
"""What every pairwise judge question shows, between its first line and its question."""
DEFAULT_JUDGE_TEMPLATE = ("You are judging two responses to the same prompt. Follow the guidelines." + _PAIR_SHOWN
                          + "Which response is better? Answer with one letter, A or B.\nAnswer:")
"""The pairwise question a generative judge reads (the project's template replaces it when it has one)."""
DEFAULT_RUBRIC_TEMPLATE = ("You are judging two responses to the same prompt on one attribute only. Follow the "
                           "guidelines." + _PAIR_SHOWN + "Attribute: {attribute}\nWhich response is better on this "
                           "attribute alone? Answer with one letter, A or B.\nAnswer:")
"""The per-attribute question of rubric judging: {attribute} is one of the project's attribute scales (its label)."""


@dataclass
class JudgeArgs:
    """AI verdicts on comparisons (trainer/judge.py): a reward model, a generative LM, the reference rules, or a
    process reward model."""

    method: str = "reward"
    """reward (sigmoid of the reward gap), generative (answer-label probabilities, both orders), rules, or prm (a
    process reward model's outcome per response: min or last step score)"""
    template: str = DEFAULT_JUDGE_TEMPLATE
    """generative: the question, with {guidelines}, {prompt}, {response_a} and {response_b}"""
    labels: list = field(default_factory=lambda: ["A", "B"])
    """generative: the answer labels for the first and the second response shown"""
    both_orders: bool = True
    """generative: ask every pair in both orders and average (cancels and measures position bias)"""
    batch_size: int = 8
    """sequences per forward pass"""
    max_length: int = 1024
    """longest tokenized input; longer ones keep their last max_length tokens"""
    rules_confidence: float = 0.95
    """rules: confidence that an answer passing the reference beats one failing it"""
    samples: int = 1
    """generative judge on an endpoint that returns no log-probabilities: answers sampled per order (temperature
    1), whose agreement is the probability; with log-probabilities one greedy answer is enough"""
    max_answer_tokens: int = 16
    """generative judge on an endpoint: the longest answer asked for (the verdict is a label or a small JSON)"""
    rubric: bool = False
    """generative judge on an endpoint: rubric judging, also asking per attribute scale of the project which
    response is better on it (rubric_template, both orders); each attribute's verdict or abstention is recorded"""
    rubric_template: str = DEFAULT_RUBRIC_TEMPLATE
    """rubric judging: the per-attribute question, with {attribute} besides the four fields of the template"""
    prm_outcome: str = "min"
    """prm: a response's outcome is its minimum step score (min: one bad step sinks it) or its last step's (last)"""
    tie_margin: float = 0.05
    """prm: responses whose outcomes differ by at most this are a tie (P(a over b) = 0.5)"""

    def __post_init__(self) -> None:
        if self.method not in JUDGE_METHODS:
            raise ValueError(f"param 'method' must be one of {', '.join(JUDGE_METHODS)}, got {self.method!r}")
        if self.prm_outcome not in PRM_OUTCOMES:
            raise ValueError(f"param 'prm_outcome' must be one of {', '.join(PRM_OUTCOMES)}, got {self.prm_outcome!r}")
        if not 0.0 <= self.tie_margin < 1.0:
            raise ValueError("param 'tie_margin' must be at least 0 and below 1")
        if not 0.5 <= self.rules_confidence <= 1.0:
            raise ValueError("param 'rules_confidence' must be between 0.5 and 1")
        if not 1 <= self.samples <= 20:
            raise ValueError("param 'samples' must be between 1 and 20")
        if not 1 <= self.max_answer_tokens <= 4096:
            raise ValueError("param 'max_answer_tokens' must be between 1 and 4096")

    def required_models(self) -> dict[str, str]:
        """The spec's model paths its method reads, with their name in messages (rules read none)."""
        return {"generative": {"base_model": "judge model"}, "reward": {"reward_model": "reward model"},
                "prm": {"reward_model": "process reward model"}}.get(self.method, {})  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """Everything about one job kind that both sides need; KIND_INFO below is the one list of kinds. Code elsewhere
    asks these fields (what it outputs, what it reads, which models it needs) and never compares kind names."""

    args: type
    """its hyperparameters (a dataclass above)"""
    entry: str
    """"module:function" that trainer.run calls with the parsed JobSpec (imported only when that kind runs)"""
    output: str
    """what it writes (trainer.results): a "reward" or "policy" model to register, or "generations" / "scores" /
    "judgments" for the app"""
    title: str
    """what it makes, in words (the model card's title, pages)"""
    dataset_format: str | None = None
    """the snapshot format it trains on (the app builds one when none is given); None: it reads no snapshot"""
    prompts: str | None = None
    """the prompts file the app writes for it (spec.prompts_path): "all" (the project's prompts, always),
    "without_snapshot" (the project's prompts when it is given no snapshot), "open_comparisons" (open comparisons
    with their completions); None: none (or its domain writes its own inputs)"""
    base_model: str | None = "policy"
    """the model version it starts from: "policy" (given, else the project's newest policy), "any" (any version
    when given, else the newest policy), None (it starts from none)"""
    reward_model: str = "none"
    """whether it needs a reward model version: "required", "by_rewards" (when its rewards param names the
    reward_model reward, or gives none), "none" (one may still be given)"""
    round_update: bool = False
    """a round's recipe may use it as the policy update"""
    curves: bool = False
    """it reports training curves while it runs (the job page keeps a place for them)"""
    kl_metric: str | None = None
    """its metric that is the KL of its output policy to the reference (the typed result's kl_to_reference)"""
    loss_metric: str | None = None
    """its metric that is the final training loss (the typed result's train_loss)"""
    domain: str = "training"
    """the app domain that creates its jobs, writes its inputs and stores its output"""
    endpoint: bool = False
    """its model may be an endpoint (a version served elsewhere, asked over HTTP) instead of a local checkpoint"""
    key_params: tuple[str, ...] = ()
    """the few hyperparameters that matter, shown on the training page and by `rankforge train --help`"""

    @property
    def trains_model(self) -> bool:
        """It writes a model checkpoint the registry registers."""
        return self.output in MODEL_KINDS

    @property
    def trains_policy(self) -> bool:
        return self.output == "policy"

    @property
    def reads_prompts(self) -> bool:
        """It can read a JSONL of the project's prompts instead of, or besides, a snapshot."""
        return self.prompts in ("all", "without_snapshot")


_EPOCHS = ("learning_rate", "num_train_epochs", "max_steps")
_GROUPS = ("learning_rate", "max_steps", "num_generations", "beta", "max_completion_length")
_MEAN_LOSS = "train/loss_mean"
_POLICY = {"output": "policy", "round_update": True, "curves": True}
_FROM_PROMPTS = {**_POLICY, "prompts": "without_snapshot", "kl_metric": "eval/kl_to_reference", "loss_metric": "train/loss"}

KIND_INFO: dict[str, Kind] = {
    "reward": Kind(RewardArgs, "trainer.reward:main", "reward", "reward model", "pairs", base_model="any", curves=True,
                   loss_metric=_MEAN_LOSS, key_params=(*_EPOCHS, "per_device_train_batch_size", "margin_coefficient")),
    "reward_multi": Kind(MultiRewardArgs, "trainer.reward_multi:main", "reward", "multi-objective reward model",
                         "ratings", base_model="any", curves=True, loss_metric="loss/total",
                         key_params=(*_EPOCHS, "attribute_weights", "preference_weight")),
    "dpo": Kind(DPOArgs, "trainer.dpo:main", title="DPO policy", dataset_format="pairs", loss_metric=_MEAN_LOSS, **_POLICY,
                key_params=(*_EPOCHS, "beta", "per_device_train_batch_size")),
    "kto": Kind(KTOArgs, "trainer.kto:main", title="KTO policy", dataset_format="kto", kl_metric="train/kl",
                loss_metric=_MEAN_LOSS, **_POLICY, key_params=(*_EPOCHS, "beta", "per_device_train_batch_size")),
    "ppo": Kind(PPOArgs, "trainer.ppo:main", title="PPO policy", reward_model="required", **_FROM_PROMPTS | {"loss_metric": "loss/total"},
                key_params=("learning_rate", "max_steps", "kl_coef", "max_new_tokens", "temperature")),
    "grpo": Kind(GRPOArgs, "trainer.grpo:main_grpo", title="GRPO policy", reward_model="by_rewards", **_FROM_PROMPTS,
                 key_params=_GROUPS),
    "rloo": Kind(RLOOArgs, "trainer.grpo:main_rloo", title="RLOO policy", reward_model="by_rewards", **_FROM_PROMPTS,
                 key_params=_GROUPS),
    "generate": Kind(GenerateArgs, "trainer.generate:main", "generations", "generations", prompts="all",
                     kl_metric="generate/kl_to_reference", endpoint=True,
                     key_params=("num_completions", "temperature", "top_p", "max_new_tokens")),
    "prm": Kind(PRMArgs, "trainer.prm:main", "prm", "process reward model", "steps", base_model="any", curves=True,
                loss_metric=_MEAN_LOSS, key_params=(*_EPOCHS, "per_device_train_batch_size", "step_separator")),
    "score": Kind(ScoreArgs, "trainer.generate:main_score", "scores", "reward scores", prompts="open_comparisons",
                  base_model=None, reward_model="required", key_params=("batch_size", "prm_outcome")),
    "judge": Kind(JudgeArgs, "trainer.judge:main", "judgments", "AI judgments", base_model=None, domain="judges",
                  endpoint=True,
                  key_params=("method", "batch_size")),
}  # fmt: skip
KINDS: tuple[str, ...] = tuple(KIND_INFO)
"""Every trainer job kind, in the order pages list them. The app derives its list from this one."""
ARGS: dict[str, type] = {kind: info.args for kind, info in KIND_INFO.items()}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (inherited fields included; subclasses win)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = following.value.value.strip()
    return docs


DEFAULTS: dict[str, dict[str, Any]] = {kind: asdict(cls()) for kind, cls in ARGS.items()}


class _FieldDocs(Mapping[str, dict[str, str]]):
    """{kind: {field: docstring}}, each kind's parsed from source on first use: parsing every kind's dataclass
    source cost ~0.2 s at import in every process that imports the params (the web process included)."""

    def __getitem__(self, kind: str) -> dict[str, str]:
        return _field_docs_of(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(ARGS)

    def __len__(self) -> int:
        return len(ARGS)


@functools.cache
def _field_docs_of(kind: str) -> dict[str, str]:
    return field_docs(ARGS[kind])


FIELD_DOCS: Mapping[str, dict[str, str]] = _FieldDocs()


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Accept JSON values that fit the field's annotation (an int where a float is wanted is fine)."""
    origin = typing.get_origin(annotation)
    allowed = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is bool and isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return value
        container = typing.get_origin(kind) or kind  # list, dict, list[dict], ...
        if container in (list, dict) and isinstance(value, container):
            return value
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"param {name!r} must be {wanted}, got {value!r}")


def parse_params(kind: str, params: dict[str, Any] | None) -> Any:
    """Build the kind's Args from a job's params, rejecting unknown names and wrong types with a clear message."""
    if kind not in ARGS:
        raise ValueError(f"unknown job kind {kind!r}; known kinds: {', '.join(ARGS)}")
    cls = ARGS[kind]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params or {}) - known)
    if unknown:
        raise ValueError(
            f"unknown param(s) for {kind}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {name: _check_type(name, value, hints[name]) for name, value in (params or {}).items()}
    return cls(**values)
