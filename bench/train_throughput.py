"""Training and generation throughput per job kind: tokens per second and peak memory, 1 process vs 2.

    .venv/bin/python bench/train_throughput.py                       # CPU: tiny models, 1 and 2 processes
    .venv/bin/python bench/train_throughput.py --size 100m --lora both --vllm both   # on a GPU machine

Every run is a real job (`python -m trainer.run SPEC`, or `accelerate launch --config_file trainer/accelerate/cpu.yaml
--num_processes 2` for 2 processes; on a GPU the `ddp` config), on the synthetic keyword task (trainer.tiny). A small
wrapper around trainer.run reports each process's peak memory (RSS, and CUDA max allocated on a GPU).

tokens/s: training kinds count the tokens of the sequences the optimizer saw (steps x global batch x the mean
tokens per row, encoded exactly as the trainer does: prompt + chosen and prompt + rejected for pairs, prompt +
completion twice for KTO with its KL pass) over the training runtime the trainer reports; generate counts new
tokens over its runtime. --size 100m builds a Llama-style model of about 100M parameters from a config (random
weights, so generation runs to max_new_tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WRAPPER = r"""
import json, os, resource, sys
from trainer import progress
from trainer.run import main
code = main(sys.argv[1:])
peak = {"rank": int(os.environ.get("RANK", "0")), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if "torch" in sys.modules:
    import torch
    if torch.cuda.is_available():
        peak["cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
print("BENCH_PEAK " + json.dumps(peak), file=sys.stderr, flush=True)
sys.exit(code)
"""

KINDS = ("reward", "dpo", "kto", "generate")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_world(root: Path, size: str) -> dict:
    from trainer.data import unpair
    from trainer.tiny import build_tiny_policy, keyword_pairs, keyword_texts, train_tokenizer, write_snapshot

    train = keyword_pairs(256, seed=1)
    tokenizer = train_tokenizer(keyword_texts(train), vocab_size=1024)
    shape = {"hidden_size": 896, "num_layers": 12, "num_heads": 14} if size == "100m" else {}
    policy = build_tiny_policy(root / "policy", tokenizer, **shape)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": i, "prompt": r["prompt"]}) + "\n"
                               for i, r in enumerate(train[:64])))  # fmt: skip
    return {
        "policy": policy,
        "pairs": write_snapshot(root / "pairs", {"train": train}),
        "kto": write_snapshot(root / "kto", {"train": unpair(train)}, fmt="kto"),
        "prompts": prompts,
        "rows": train,
    }


def tokens_per_row(kind: str, world: dict, max_length: int) -> float:
    from trainer.encoding import encode_rows
    from trainer.models import load_tokenizer

    tokenizer = load_tokenizer(world["policy"])
    if kind == "kto":
        from trainer.data import unpair

        encoded, _ = encode_rows(unpair(world["rows"]), tokenizer, max_length, ("completion",))
        return 2 * sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in encoded) / len(encoded)
    encoded, _ = encode_rows(world["rows"], tokenizer, max_length, ("chosen", "rejected"))
    return sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in encoded) / len(encoded)


def run_kind(kind: str, world: dict, root: Path, *, processes: int, steps: int, batch: int, lora: bool,
             vllm: bool, gpu: bool) -> dict:  # fmt: skip
    out = root / f"{kind}-{processes}-{int(lora)}-{int(vllm)}"
    params: dict = {"max_steps": steps, "per_device_train_batch_size": batch // processes, "max_length": 64,
                    "logging_steps": steps, "eval_split": ""}  # fmt: skip
    spec = {"kind": kind, "output_dir": str(out), "base_model": str(world["policy"]), "seed": 0}
    if kind == "generate":
        params = {"num_completions": 4, "max_new_tokens": 32, "batch_size": 16, "backend": "vllm" if vllm else "transformers"}
        spec["prompts_path"] = str(world["prompts"])
    else:
        spec["dataset_path"] = str(world["kto" if kind == "kto" else "pairs"])
        if lora:
            params |= {"use_lora": True, "lora_r": 16, "lora_alpha": 32}
    spec["params"] = params
    spec_path = root / f"{out.name}.json"
    spec_path.write_text(json.dumps(spec))
    wrapper = root / "wrapper.py"
    wrapper.write_text(WRAPPER)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if processes == 1:
        command = [sys.executable, str(wrapper), str(spec_path)]
    else:
        config = ROOT / "trainer" / "accelerate" / ("ddp.yaml" if gpu else "cpu.yaml")
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                   "--num_processes", str(processes), "--main_process_port", str(_free_port()),
                   str(wrapper), str(spec_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    finished = [e for e in events if e["event"] == "done"]
    if done.returncode != 0 or not finished:
        tail = done.stderr[-2000:]
        return {"kind": kind, "processes": processes, "error": (events[-1].get("message") if events else tail)}
    metrics = finished[0]["metrics"]
    peaks = [json.loads(line.split(" ", 1)[1]) for line in done.stderr.splitlines() if line.startswith("BENCH_PEAK ")]
    row = {"kind": kind, "processes": processes, "lora": lora, "vllm": vllm,
           "peak_rss_mib": round(max(p["rss_mib"] for p in peaks)),
           "peak_cuda_gib": round(max(p.get("cuda_gib", 0.0) for p in peaks), 2)}  # fmt: skip
    if kind == "generate":
        row["tokens_per_s"] = metrics["generate/tokens_per_s"]
        row["backend"] = metrics["generate/backend"]
    else:
        runtime = metrics["train/runtime_s"]
        tokens = metrics["train/steps"] * batch * tokens_per_row(kind, world, 64)
        row["tokens_per_s"] = round(tokens / runtime, 1)
        row["runtime_s"] = round(runtime, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "100m"), default="tiny")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="global batch (split over the processes)")
    parser.add_argument("--lora", choices=("off", "on", "both"), default="off")
    parser.add_argument("--vllm", choices=("off", "on", "both"), default="off", help="generate's backend (GPU only)")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    choices = {"off": [False], "on": [True], "both": [False, True]}
    with tempfile.TemporaryDirectory(prefix="rankforge-throughput-") as tmp:
        root = Path(tmp)
        world = build_world(root, args.size)
        from trainer.models import load_policy

        n_params = sum(p.numel() for p in load_policy(world["policy"]).parameters())
        print(f"# device: {'cuda ' + torch.cuda.get_device_name() if gpu else 'cpu'}; model: {n_params / 1e6:.1f}M "
              f"parameters ({args.size}); global batch {args.batch}, {args.steps} steps, max_length 64")  # fmt: skip
        print("| kind | processes | LoRA | vLLM | tokens/s | peak RSS MiB (per process) | peak CUDA GiB |")
        print("|---|---|---|---|---|---|---|")
        for kind in args.kinds.split(","):
            for processes in (int(p) for p in args.processes.split(",")):
                if kind == "generate" and processes > 1:
                    continue  # generate runs on one process
                for lora in choices[args.lora] if kind != "generate" else [False]:
                    for vllm in choices[args.vllm] if kind == "generate" else [False]:
                        row = run_kind(kind, world, root, processes=processes, steps=args.steps, batch=args.batch,
                                       lora=lora, vllm=vllm, gpu=gpu)  # fmt: skip
                        if "error" in row:
                            print(f"| {kind} | {processes} | {lora} | {vllm} | failed: {row['error'][:200]} | | |")
                            continue
                        print(f"| {kind} | {processes} | {'yes' if lora else 'no'} | {'yes' if vllm else 'no'} | "
                              f"{row['tokens_per_s']} | {row['peak_rss_mib']} | {row['peak_cuda_gib']} |",
                              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
