"""Does the product's default `train reward` lose accuracy against a plain TRL script? Real data, same split.

    .venv/bin/python bench/parity.py                                  # a check: 600 pairs, 1 seed (~1 min)
    .venv/bin/python bench/parity.py --pairs 1992 --max-length 256 --order grouped --repeats 5   # the figure
    .venv/bin/python bench/parity.py --pairs 1992 --max-length 256 --order random               # by construction

The figure (every usable row, 1082 train pairs that fit 256 tokens, 498 test pairs, 1 epoch) took 2.6 min a seed on
the shared 2 cores (load 4-8): 5 seeds about 13 min.

Data: the shared HH-RLHF harmless file (chosen/rejected conversations), read in place. Each row becomes a pair: the
prompt is the conversation up to its last "Assistant:" turn, chosen and rejected are the two last answers (rows whose
two conversations differ before that turn are dropped). A seeded shuffle (1234) splits the rows into train and test
once: both sides train on the same train rows, in the same file order, and are measured on the same test pairs.

  product  the reward job as the worker runs it: a snapshot directory (train/test splits), `python -m trainer.run
           spec.json` with the kind's defaults (trainer.params.RewardArgs) where the run does not set them;
  plain    a TRL script an ML engineer would write: RewardTrainer on {"prompt", "chosen", "rejected"} text rows,
           TRL's own tokenization and collator, the same hyperparameters (learning rate, epochs, batch, max_length,
           schedule, warmup, weight decay, clipping, seed).

Parity by construction. The two pipelines differ only where the product chose to (tests/trainer/test_reward_parity.py
pins that the token ids are otherwise equal: prompt + answer + EOS, BOS-framed, right padding, chosen rows then
rejected in each batch, the same Bradley-Terry loss, dropout off in both):
  * a pair longer than max_length: TRL DROPS it; the product cuts the prompt's START and keeps it (the answer and its
    EOS survive). At max_length 128 on HH TRL keeps only about a third of the rows. --rows fit (default) trains both
    on the pairs that fit untruncated (same rows, same ids); --rows all gives both every row (the product's choice
    measured: it trains on more, harder, rows);
  * batches: the product groups pairs of similar length (faster); TRL samples in a seeded random order. --order random
    (default) runs the product with group_by_length=false, so both see the same batches in the same order; --order
    grouped runs the product's default.
With --rows fit --order random the two should train (nearly) the same model: per-pair agreement near 100 %.
Held-out accuracy: one evaluator for both trained models, the product's encoding (prompt start cut to max_length,
EOS as in training) and scoring; a tie counts half. Paired: the same test pairs for both. Printed: each seed's
accuracies, the difference, the agreement rate of the two models' per-pair decisions; the mean difference and its
spread over seeds; `uptime` (the machine may be shared). The model: the same start checkpoint for both, a Llama
built from a config (random weights; no hub access here) with a BPE tokenizer trained on the train split, or --model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path("/work/shared/data/hh_rlhf_harmless_test_2000.jsonl")
MARK = "\n\nAssistant:"
SIZES = {"tiny": (64, 2, 4, 256), "small": (256, 4, 4, 1024), "20m": (512, 6, 8, 1376)}

PLAIN_SCRIPT = r"""
import json, sys
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

cfg = json.loads(open(sys.argv[1]).read())
p = cfg["params"]
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=1)
model.config.pad_token_id = tokenizer.pad_token_id
rows = [json.loads(line) for line in open(cfg["train"])]
dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
args = RewardConfig(output_dir=cfg["out"] + "/_scratch", gradient_accumulation_steps=p["gradient_accumulation_steps"], learning_rate=p["learning_rate"],
                    num_train_epochs=p["num_train_epochs"], max_steps=p.get("max_steps", -1),
                    per_device_train_batch_size=p["per_device_train_batch_size"], max_length=p["max_length"],
                    lr_scheduler_type=p["lr_scheduler_type"], warmup_steps=p["warmup_steps"],
                    weight_decay=p["weight_decay"], max_grad_norm=p["max_grad_norm"], seed=cfg["seed"],
                    logging_steps=50, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                    bf16=False, dataloader_num_workers=0,
                    # TRL turns recomputation on by default; the product's default is off. Same numbers, less time.
                    gradient_checkpointing=False)
trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
trainer.save_model(cfg["out"])
tokenizer.save_pretrained(cfg["out"])
print("PLAIN done")
"""


def hh_pairs(path: Path) -> list[dict]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        chosen, rejected = row["chosen"], row["rejected"]
        cut_c, cut_r = chosen.rfind(MARK), rejected.rfind(MARK)
        if cut_c < 0 or chosen[: cut_c + len(MARK)] != rejected[: cut_r + len(MARK)]:
            continue
        prompt = chosen[: cut_c + len(MARK)]
        answer_c, answer_r = chosen[cut_c + len(MARK) :], rejected[cut_r + len(MARK) :]
        if answer_c.strip() and answer_r.strip() and answer_c != answer_r:
            pairs.append({"prompt": prompt, "chosen": answer_c, "rejected": answer_r})
    return pairs


def split(pairs: list[dict], n: int, test_share: float) -> tuple[list[dict], list[dict]]:
    rows = list(pairs)
    random.Random(1234).shuffle(rows)
    rows = rows[:n]
    n_test = max(1, int(len(rows) * test_share))
    for i, row in enumerate(rows):
        row["comparison_id"] = i
    return rows[n_test:], rows[:n_test]


def build_model(root: Path, train: list[dict], size: str) -> Path:
    from transformers import LlamaForSequenceClassification

    from trainer.tiny import _save, tiny_config, train_tokenizer

    tokenizer = train_tokenizer(
        [r[k] for r in train for k in ("prompt", "chosen", "rejected")], vocab_size=4096
    )
    hidden, layers, heads, intermediate = SIZES[size]
    config = tiny_config(tokenizer, hidden_size=hidden, num_layers=layers, num_heads=heads,
                         intermediate_size=intermediate, num_labels=1)  # fmt: skip
    import torch

    torch.manual_seed(0)
    return _save(LlamaForSequenceClassification(config), tokenizer, root / "start")


def run_product(root: Path, model: Path, snapshot: Path, params: dict, seed: int) -> tuple[Path, dict]:
    from app.jobs.child import child_env

    out = root / f"product-{seed}"
    spec = {"kind": "reward", "job_id": 1, "base_model": str(model), "dataset_path": str(snapshot),
            "output_dir": str(out), "params": params, "launcher": "python", "seed": seed}  # fmt: skip
    spec_path = root / f"spec-{seed}.json"
    spec_path.write_text(json.dumps(spec))
    env = child_env({"RANKFORGE_TRAINER_CACHE": str(root / "cache")})
    completed = subprocess.run([sys.executable, "-m", "trainer.run", str(spec_path)], cwd=ROOT, env=env,
                               capture_output=True, text=True)  # fmt: skip
    done = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith('{"event": "done"')]
    if not done:
        raise SystemExit(f"product run failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return out, done[0]["metrics"]


def run_plain(root: Path, model: Path, train_path: Path, params: dict, seed: int) -> Path:
    script = root / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    out = root / f"plain-{seed}"
    cfg_path = root / f"plain-{seed}.json"
    cfg_path.write_text(json.dumps({"model": str(model), "train": str(train_path), "out": str(out),
                                    "params": params, "seed": seed}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANKFORGE_",))}
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    completed = subprocess.run([sys.executable, str(script), str(cfg_path)], cwd=root, env=env,
                               capture_output=True, text=True)  # fmt: skip
    if "PLAIN done" not in completed.stdout:
        raise SystemExit(f"plain run failed:\n{completed.stderr[-4000:]}")
    return out


def held_out_scores(model_dir: Path, test: list[dict], max_length: int) -> tuple[list[float], list[float]]:
    """Scores of each test pair's chosen and rejected answer, the product's encoding and scoring for any model."""
    from trainer.models import load_reward, load_tokenizer
    from trainer.reward import pair_scores

    tokenizer = load_tokenizer(model_dir, "trained model")
    model = load_reward(model_dir, tokenizer=tokenizer, role="trained model")
    return pair_scores(model, tokenizer, test, batch_size=16, max_length=max_length)


def decisions(scores: tuple[list[float], list[float]]) -> list[float]:
    """1 chosen ranked first, 0 rejected first, 0.5 a tie."""
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(*scores, strict=True)]


def fitting(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Rows whose prompt + chosen and prompt + rejected (with EOS) fit max_length untruncated: TRL keeps exactly
    these, and the product encodes them to the same ids."""
    from trainer.encoding import encode_pair

    kept = []
    for row in rows:
        encoded = encode_pair(row["prompt"], [row["chosen"], row["rejected"]], tokenizer, max_length)
        if encoded is not None and not encoded.truncated:
            kept.append(row)
    return kept


def spread(values: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--pairs", type=int, default=600, help="rows used (train + test) before the fit filter"
    )
    parser.add_argument("--test-share", type=float, default=0.25)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument(
        "--model", type=Path, help="a sequence-classification checkpoint instead of a built one"
    )
    parser.add_argument(
        "--epochs", type=float, default=1.0, help="the kind's default is 3; 1 keeps a run short"
    )
    parser.add_argument("--batch", type=int, help="default: the kind's")
    parser.add_argument("--learning-rate", type=float, help="default: the kind's")
    parser.add_argument(
        "--max-length", type=int, default=128, help="the kind's default is 512; CPU runs use less"
    )
    parser.add_argument("--rows", choices=("fit", "all"), default="fit",
                        help="fit: train both on the pairs that fit max_length untruncated; all: every pair (TRL "
                             "drops the long ones, the product cuts their prompt's start)")  # fmt: skip
    parser.add_argument("--order", choices=("random", "grouped"), default="random",
                        help="random: product with group_by_length=false (TRL's order); grouped: the product's "
                             "default length-grouped batches")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0..repeats-1")
    args = parser.parse_args(argv)

    from trainer.models import load_tokenizer
    from trainer.params import RewardArgs
    from trainer.tiny import write_snapshot

    defaults = RewardArgs()
    params = {"learning_rate": args.learning_rate or defaults.learning_rate,
              "num_train_epochs": args.epochs,
              "per_device_train_batch_size": args.batch or defaults.per_device_train_batch_size,
              "gradient_accumulation_steps": defaults.gradient_accumulation_steps,
              "max_length": args.max_length, "lr_scheduler_type": defaults.lr_scheduler_type,
              "warmup_steps": defaults.warmup_steps, "weight_decay": defaults.weight_decay,
              "max_grad_norm": defaults.max_grad_norm}  # fmt: skip
    product_params = params | {"group_by_length": args.order == "grouped"}
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rf-acc-parity-") as tmp:
        root = Path(tmp)
        os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
        train, test = split(hh_pairs(args.data), args.pairs, args.test_share)
        model = args.model or build_model(root, train, args.size)
        if args.rows == "fit":
            before = len(train)
            train = fitting(train, load_tokenizer(model), args.max_length)
            print(
                f"--rows fit: {len(train)} of {before} train pairs fit {args.max_length} tokens untruncated"
            )
        snapshot = write_snapshot(root / "snapshot", {"train": train, "test": test})
        train_path = snapshot / "train.jsonl"
        print(f"data: {args.data.name}: {len(train)} train / {len(test)} test pairs (split seed 1234, rows "
              f"{args.rows}, product order {args.order}); model: "
              f"{args.model or 'Llama ' + args.size + ' (random weights)'}; params {json.dumps(params)}")  # fmt: skip
        print(f"uptime before: {uptime}", flush=True)
        gaps, agreements = [], []
        for seed in range(args.repeats):
            started = time.perf_counter()
            product_dir, metrics = run_product(root, model, snapshot, product_params, seed)
            product_seconds = time.perf_counter() - started
            started = time.perf_counter()
            plain_dir = run_plain(root, model, train_path, params, seed)
            plain_seconds = time.perf_counter() - started
            product = decisions(held_out_scores(product_dir, test, args.max_length))
            plain = decisions(held_out_scores(plain_dir, test, args.max_length))
            product_acc, plain_acc = sum(product) / len(test), sum(plain) / len(test)
            agreement = sum(a == b for a, b in zip(product, plain, strict=True)) / len(test)
            gaps.append(product_acc - plain_acc)
            agreements.append(agreement)
            print(f"seed {seed}: held-out accuracy product {product_acc:.4f} (its own eval/accuracy "
                  f"{metrics.get('eval/accuracy')}; trained on {metrics.get('train/pairs_used')} pairs, "
                  f"{metrics.get('train/pairs_truncated')} truncated) plain TRL {plain_acc:.4f}  difference "
                  f"{100 * (product_acc - plain_acc):+.1f} points; same decision on {100 * agreement:.1f} % of "
                  f"the {len(test)} test pairs; wall product {product_seconds:.0f} s, plain {plain_seconds:.0f} s",
                  flush=True)  # fmt: skip
        mean = sum(gaps) / len(gaps)
        print(f"mean difference product - plain over {len(gaps)} seed(s): {100 * mean:+.2f} points (sd over seeds "
              f"{100 * spread(gaps):.2f}, min {100 * min(gaps):+.1f}, max {100 * max(gaps):+.1f}; "
              f"{'within' if round(abs(100 * mean), 6) <= 1.0 else 'NOT within'} 1 point); mean agreement "
              f"{100 * sum(agreements) / len(agreements):.1f} %")  # fmt: skip
        print(f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        print(f"wall time: {(time.perf_counter() - begun) / 60:.1f} min")


if __name__ == "__main__":
    main()
