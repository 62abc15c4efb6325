"""Is a Rankforge training job as fast as a plain TRL script? Reward and DPO, 1 and 2 processes, same rows.

    .venv/bin/python bench/train_parity.py                                 # 20M parameters, 6 steps: a few minutes
    .venv/bin/python bench/train_parity.py --size 50m --steps 30 --kinds reward

For each kind and process count, the same work twice:
  product  the job as the worker runs it: a snapshot on disk, `python -m trainer.run spec.json` (2 processes:
           `accelerate launch --config_file trainer/accelerate/cpu.yaml -m trainer.run`, the worker's command for
           {"launcher": "accelerate", "accelerate_config": "cpu"}) with the worker's child environment
           (app.jobs.child.child_env), a cold tokenization cache;
  plain    a TRL script an ML engineer would write (RewardTrainer / DPOTrainer, TRL's own collators and sampler,
           torch's default threads; under accelerate, torchrun's), on the product's rows: the snapshot's pairs
           encoded by trainer.encoding (prompt start cut to fit max_length), handed to TRL already tokenized, so
           both sides train on the same tokens.
Same model (a Llama built from a config at --size with random weights, a BPE tokenizer trained here), same
hyperparameters (batch, steps, learning rate, max_length, fp32, no gradient checkpointing, seed); no held-out split.

Prints per run: wall time (process start to exit), training time per step (the trainer's train_runtime / steps),
tokens per second (the real, unpadded tokens of the pairs the optimizer saw, over train_runtime) and the product's
phases (time/*); then product/plain for wall time and time per step. The data: prompts with a long-tailed length
(a share longer than max_length, cut at their start), completions of 8-60 words, as in HH-RLHF-like exports.
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

SIZES = {  # hidden, layers, heads, intermediate: parameters with the ~4-8k-token vocabulary (tied embeddings)
    "20m": (512, 6, 8, 1376),
    "50m": (640, 10, 10, 1728),
    "100m": (768, 14, 12, 2048),
}
ACCELERATE_CPU = ROOT / "trainer" / "accelerate" / "cpu.yaml"

PLAIN_SCRIPT = r'''
import json, sys, time
started = time.perf_counter()
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

cfg = json.loads(open(sys.argv[1]).read())
rows = json.loads(open(cfg["rows"]).read())
p = cfg["params"]
common = dict(output_dir=cfg["out"] + "/_scratch", learning_rate=p["learning_rate"], max_steps=p["max_steps"],
              per_device_train_batch_size=p["per_device_train_batch_size"], max_length=p["max_length"],
              logging_steps=p["logging_steps"], save_strategy="no", eval_strategy="no", report_to="none",
              disable_tqdm=True, seed=0, bf16=False, gradient_checkpointing=False, dataloader_num_workers=0,
              dataloader_pin_memory=False, use_cpu=cfg["processes"] > 1)
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
if cfg["kind"] == "reward":
    model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_list([{"chosen_ids": r["prompt_ids"] + r["chosen_ids"],
                                  "rejected_ids": r["prompt_ids"] + r["rejected_ids"]} for r in rows])
    trainer = RewardTrainer(model=model, args=RewardConfig(**common), train_dataset=dataset, processing_class=tokenizer)
else:
    class TokenizedDPOTrainer(DPOTrainer):  # TRL's DPO tokenizes text rows itself; these are tokenized already
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    model = AutoModelForCausalLM.from_pretrained(cfg["model"])
    config = DPOConfig(**common, beta=p["beta"], precompute_ref_log_probs=True)
    # on disk, written by the main process: the ranks share TRL's cache of reference log-probs through its files
    with config.main_process_first(local=False):
        if config.process_index == 0:
            Dataset.from_list([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]
                              ).save_to_disk(cfg["out"] + "-data")
        dataset = Dataset.load_from_disk(cfg["out"] + "-data")
    trainer = TokenizedDPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
result = trainer.train()
trainer.save_model(cfg["out"])
if trainer.accelerator.is_main_process:
    print("PLAIN " + json.dumps({"train_runtime": result.metrics["train_runtime"], "steps": result.global_step,
                                 "loss": result.training_loss, "wall_in_script": time.perf_counter() - started}))
'''

WORDS = None


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """Pairs whose prompts have a long-tailed length (lognormal, median ~40 words, a share past 150) and
    completions of 8-60 words; chosen ones contain "please" (a learnable signal, not that it matters here)."""
    global WORDS
    rng = random.Random(seed)
    if WORDS is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        WORDS = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    rows = []
    for index in range(n):
        prompt = _words(rng, max(3, int(rng.lognormvariate(3.7, 0.8))))
        chosen = "please " + _words(rng, rng.randint(8, 60))
        rejected = _words(rng, rng.randint(8, 60))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "comparison_id": index})
    return rows


def build_world(root: Path, size: str, pairs: int) -> dict:
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from trainer.tiny import _save, tiny_config, train_tokenizer, write_snapshot

    rows = synthetic_pairs(pairs, seed=1)
    texts = [r[k] for r in rows for k in ("prompt", "chosen", "rejected")]
    tokenizer = train_tokenizer(texts, vocab_size=8192)
    hidden, layers, heads, intermediate = SIZES[size]
    config = tiny_config(tokenizer, hidden_size=hidden, num_layers=layers, num_heads=heads,
                         intermediate_size=intermediate)  # fmt: skip
    policy = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in policy.parameters())
    _save(policy, tokenizer, root / "policy")
    reward_config = tiny_config(tokenizer, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                intermediate_size=intermediate, num_labels=1)  # fmt: skip
    _save(LlamaForSequenceClassification(reward_config), tokenizer, root / "reward")
    snapshot = write_snapshot(root / "snapshot", {"train": rows})
    return {"policy": root / "policy", "reward": root / "reward", "snapshot": snapshot, "rows": rows,
            "parameters": parameters}  # fmt: skip


def product_rows(world: dict, kind: str, max_length: int) -> tuple[list[dict], int]:
    """The rows the product trains on (trainer.encoding, as the kind does), and their real tokens per pair."""
    from trainer.encoding import effective_max_length, encode_rows
    from trainer.models import load_config, load_tokenizer

    model = world["reward" if kind == "reward" else "policy"]
    tokenizer = load_tokenizer(model)
    length = effective_max_length(max_length, load_config(model), tokenizer)
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in world["rows"]]
    encoded, _ = encode_rows(pairs, tokenizer, length, ("chosen", "rejected"))
    tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in encoded)
    return encoded, tokens / max(1, len(encoded))


def params_for(kind: str, args) -> dict:
    params = {"max_steps": args.steps, "num_train_epochs": 1, "per_device_train_batch_size": args.batch,
              "learning_rate": 1e-5, "max_length": args.max_length, "logging_steps": max(1, args.steps // 2)}  # fmt: skip
    if kind == "dpo":
        params["beta"] = 0.1
    return params


def launch(processes: int, module_or_script: list[str]) -> list[str]:
    if processes == 1:
        return [sys.executable, *module_or_script]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CPU),
            "--num_processes", str(processes), *module_or_script]  # fmt: skip


def run_product(root: Path, world: dict, kind: str, processes: int, args, tag: str) -> dict:
    from app.jobs.child import child_env

    spec = {"kind": kind, "job_id": 1, "base_model": str(world["reward" if kind == "reward" else "policy"]),
            "dataset_path": str(world["snapshot"]), "output_dir": str(root / f"product-{tag}"),
            "params": params_for(kind, args), "launcher": "python", "seed": 0}  # fmt: skip
    spec_path = root / f"spec-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    env = child_env({"RANKFORGE_TRAINER_CACHE": str(root / f"cache-{tag}")})  # a cold cache: the first job's cost
    started = time.perf_counter()
    completed = subprocess.run(launch(processes, ["-m", "trainer.run", str(spec_path)]), cwd=ROOT, env=env,
                               capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    done = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith('{"event": "done"')]
    if not done:
        raise SystemExit(f"product {tag} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    metrics = done[0]["metrics"]
    return {"wall": wall, "train_runtime": metrics["train/runtime_s"], "steps": metrics["train/steps"],
            "phases": {k: v for k, v in metrics.items() if k.startswith(("time/", "system/"))}}  # fmt: skip


def run_plain(root: Path, world: dict, kind: str, processes: int, args, rows: list[dict], tag: str) -> dict:
    rows_path = root / f"rows-{kind}.json"
    if not rows_path.exists():
        rows_path.write_text(json.dumps(rows))
    script = root / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    cfg = {"kind": kind, "model": str(world["reward" if kind == "reward" else "policy"]), "rows": str(rows_path),
           "out": str(root / f"plain-{tag}"), "params": params_for(kind, args), "processes": processes}  # fmt: skip
    cfg_path = root / f"plain-{tag}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "RANKFORGE_"))}
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    started = time.perf_counter()
    completed = subprocess.run(launch(processes, [str(script), str(cfg_path)]), cwd=root, env=env,
                               capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    line = next((x for x in (completed.stdout + completed.stderr).splitlines() if x.startswith("PLAIN ")), None)
    if line is None:
        raise SystemExit(f"plain {tag} failed:\n{completed.stderr[-4000:]}")
    out = json.loads(line[len("PLAIN ") :])
    return {"wall": wall, "train_runtime": out["train_runtime"], "steps": out["steps"], "phases": {}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="reward,dpo")
    parser.add_argument("--size", choices=sorted(SIZES), default="20m")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=4, help="pairs per process per step")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    counts = [int(x) for x in args.processes.split(",")]
    pairs = max(16, args.steps * args.batch * max(counts))  # about one epoch: DPO computes reference log-probs for all

    with tempfile.TemporaryDirectory(prefix="rf-parity-") as tmp:
        root = Path(tmp)
        os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
        world = build_world(root, args.size, pairs)
        print(f"model: Llama {args.size} ({world['parameters'] / 1e6:.1f}M parameters, random weights); "
              f"{pairs} pairs, batch {args.batch} per process, {args.steps} steps, max_length {args.max_length}; "
              f"{len(os.sched_getaffinity(0))} CPUs", flush=True)  # fmt: skip
        print(f"uptime before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        lines = []
        for kind in kinds:
            rows, tokens_per_pair = product_rows(world, kind, args.max_length)
            for processes in counts:
                tag = f"{kind}-{processes}"
                results = {"product": run_product(root, world, kind, processes, args, tag),
                           "plain": run_plain(root, world, kind, processes, args, rows, tag)}  # fmt: skip
                for side, r in results.items():
                    per_step = r["train_runtime"] / max(1, r["steps"])
                    seen = r["steps"] * args.batch * processes
                    tps = seen * tokens_per_pair / max(r["train_runtime"], 1e-9)
                    phases = " ".join(f"{k}={v}" for k, v in r["phases"].items())
                    print(f"{kind:6} {processes}p {side:7} wall {r['wall']:7.1f} s  step {per_step:6.2f} s  "
                          f"{tps:8.0f} tokens/s  {phases}", flush=True)  # fmt: skip
                product, plain = results["product"], results["plain"]
                ratio_wall = product["wall"] / plain["wall"]
                ratio_step = (product["train_runtime"] / product["steps"]) / (plain["train_runtime"] / plain["steps"])
                lines.append(f"{kind:6} {processes}p  product/plain: wall {ratio_wall:.2f}  per step {ratio_step:.2f}")
                print(lines[-1], flush=True)
        print("\n".join(["summary:", *lines]))
        print(f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
