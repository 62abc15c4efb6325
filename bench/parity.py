"""Does the product's default `train reward` lose accuracy against a plain TRL script? Real data, same split.

    .venv/bin/python bench/parity.py                                    # small: 800 pairs, 1 epoch, 1 repeat
    .venv/bin/python bench/parity.py --pairs 2000 --epochs 3 --repeats 3 --size small

Data: the shared HH-RLHF harmless file (chosen/rejected conversations). Each row becomes a pair: the prompt is the
conversation up to its last "Assistant:" turn, chosen and rejected are the two last answers (rows whose two
conversations differ before that turn are dropped). A seeded shuffle splits the rows into train and test once:
both sides train on the same train rows and are measured on the same test rows.

  product  the reward job as the worker runs it: a snapshot directory (train/test splits), `python -m trainer.run
           spec.json` with the kind's defaults (trainer.params.RewardArgs) where the run does not set them;
  plain    a TRL script an ML engineer would write: RewardTrainer on {"prompt", "chosen", "rejected"} text rows,
           TRL's own tokenization and collator, the same hyperparameters (learning rate, epochs, batch, max_length,
           schedule, seed).
Model: the same starting checkpoint for both, a Llama built from a config (random weights; no hub access here)
with a BPE tokenizer trained on the train split, or --model DIR (a sequence-classification checkpoint).
Held-out accuracy: one evaluator for both trained models (score prompt + answer, cut at the start to max_length
so the answers survive; ties count half), beside the product's own eval/accuracy. Seeds 0..repeats-1; prints the
mean gap and each repeat's, and `uptime` (the machine may be shared).
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
FULL_REPEATS = 3
"""Seeds of the full run the lead makes (the estimate printed at the end is for it)."""
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
args = RewardConfig(output_dir=cfg["out"] + "/_scratch", learning_rate=p["learning_rate"],
                    num_train_epochs=p["num_train_epochs"], max_steps=p.get("max_steps", -1),
                    per_device_train_batch_size=p["per_device_train_batch_size"], max_length=p["max_length"],
                    lr_scheduler_type=p["lr_scheduler_type"], warmup_steps=p["warmup_steps"],
                    weight_decay=p["weight_decay"], max_grad_norm=p["max_grad_norm"], seed=cfg["seed"],
                    logging_steps=50, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                    bf16=False, dataloader_num_workers=0)
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


def held_out_accuracy(model_dir: Path, test: list[dict], max_length: int) -> float:
    """Share of test pairs whose chosen answer scores higher (ties half); prompt + answer cut at the start."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    model.config.pad_token_id = tokenizer.pad_token_id

    def scores(texts: list[str]) -> list[float]:
        out = []
        with torch.no_grad():
            for begin in range(0, len(texts), 16):
                batch = tokenizer(texts[begin : begin + 16], truncation=True, max_length=max_length, padding=True,
                                  return_tensors="pt")  # fmt: skip
                out += model(**batch).logits[:, 0].tolist()
        return out

    chosen = scores([r["prompt"] + r["chosen"] for r in test])
    rejected = scores([r["prompt"] + r["rejected"] for r in test])
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)) / len(
        test
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=800, help="rows used (train + test)")
    parser.add_argument("--test-share", type=float, default=0.25)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument(
        "--model", type=Path, help="a sequence-classification checkpoint instead of a built one"
    )
    parser.add_argument("--epochs", type=float, help="default: the reward kind's (trainer.params.RewardArgs)")
    parser.add_argument("--batch", type=int, help="default: the kind's")
    parser.add_argument("--learning-rate", type=float, help="default: the kind's")
    parser.add_argument(
        "--max-length", type=int, default=256, help="the kind's default is 512; CPU runs use less"
    )
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0..repeats-1")
    args = parser.parse_args(argv)

    from trainer.params import RewardArgs
    from trainer.tiny import write_snapshot

    defaults = RewardArgs()
    params = {"learning_rate": args.learning_rate or defaults.learning_rate,
              "num_train_epochs": args.epochs or defaults.num_train_epochs,
              "per_device_train_batch_size": args.batch or defaults.per_device_train_batch_size,
              "max_length": args.max_length, "lr_scheduler_type": defaults.lr_scheduler_type,
              "warmup_steps": defaults.warmup_steps, "weight_decay": defaults.weight_decay,
              "max_grad_norm": defaults.max_grad_norm}  # fmt: skip
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="rf-acc-parity-") as tmp:
        root = Path(tmp)
        os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
        train, test = split(hh_pairs(args.data), args.pairs, args.test_share)
        snapshot = write_snapshot(root / "snapshot", {"train": train, "test": test})
        train_path = snapshot / "train.jsonl"
        model = args.model or build_model(root, train, args.size)
        print(f"data: {args.data.name}: {len(train)} train / {len(test)} test pairs (split seed 1234); model: "
              f"{args.model or 'Llama ' + args.size + ' (random weights)'}; params {json.dumps(params)}")  # fmt: skip
        print(f"uptime before: {uptime}", flush=True)
        gaps, train_seconds = [], 0.0
        for seed in range(args.repeats):
            started = time.perf_counter()
            product_dir, metrics = run_product(root, model, snapshot, params, seed)
            product_seconds = time.perf_counter() - started
            started = time.perf_counter()
            plain_dir = run_plain(root, model, train_path, params, seed)
            plain_seconds = time.perf_counter() - started
            product = held_out_accuracy(product_dir, test, args.max_length)
            plain = held_out_accuracy(plain_dir, test, args.max_length)
            gaps.append(product - plain)
            train_seconds += product_seconds + plain_seconds
            print(f"seed {seed}: held-out accuracy product {product:.4f} (its own eval/accuracy "
                  f"{metrics.get('eval/accuracy')}) plain TRL {plain:.4f}  gap {100 * (product - plain):+.1f} points; "
                  f"wall product {product_seconds:.0f} s, plain {plain_seconds:.0f} s", flush=True)  # fmt: skip
        mean = sum(gaps) / len(gaps)
        print(f"mean gap over {len(gaps)} repeat(s): {100 * mean:+.2f} points "
              f"({'within' if round(abs(100 * mean), 6) <= 1.0 else 'NOT within'} 1 point)")  # fmt: skip
        print(f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        # The full run: every usable row of the file, the kind's default epochs, FULL_REPEATS seeds, this size and
        # max_length; training time grows about linearly in train pairs x epochs (the evaluation is small).
        usable = len(hh_pairs(args.data))
        full_train = usable - max(1, int(usable * args.test_share))
        full_epochs = defaults.num_train_epochs
        scale = (full_train * full_epochs) / (len(train) * params["num_train_epochs"])
        expected = train_seconds / args.repeats * scale * FULL_REPEATS
        print(f"expected full running time: about {expected / 60:.0f} min on this machine for --pairs {usable} "
              f"--epochs {full_epochs:g} --repeats {FULL_REPEATS} --size {args.size} --max-length {args.max_length} "
              f"({full_train} train pairs; from this run's training wall time, {train_seconds:.0f} s for "
              f"{len(train)} pairs x {params['num_train_epochs']:g} epoch(s) x {args.repeats} repeat(s), scaled "
              "linearly in pairs x epochs x repeats; a larger --size or --max-length costs more)")  # fmt: skip


if __name__ == "__main__":
    main()
