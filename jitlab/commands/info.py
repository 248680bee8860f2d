"""`jitlab info`: parameters and multiply-adds of a named model, counted on the meta device; with ``--memory``
its memory per GPU in training (activations counted from the tensors saved for backward: ``jitlab.train.fitplan``).

    jitlab info --model JiT-G/16 --img_size 256 --batch_size 128 --memory [--strategy fsdp2 --world_size 8]
"""

from __future__ import annotations

import json

from jitlab.errors import ArgumentParser
from jitlab.core.models import MODELS
from jitlab.core.models.flops import describe


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="jitlab info", description="Parameters and GMACs of a named JiT model.")
    parser.add_argument("--model", required=True, choices=list(MODELS), metavar="NAME",
                        help="a registry name, e.g. JiT-B/16 (sizes G H L B S T P; patches 2 4 8 16 32 64)")
    parser.add_argument("--img_size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    memory = parser.add_argument_group("memory (with --memory; predictions, not measured on a GPU)")
    memory.add_argument("--memory", action="store_true", help="training memory per GPU: fixed bytes and counted "
                                                               "activations (bf16 autocast, eager and compiled)")
    memory.add_argument("--batch_size", type=int, default=128,
                        help="images per GPU per step for the peak (default 128, the paper's)")
    memory.add_argument("--strategy", choices=["ddp", "fsdp2"], default="ddp",
                        help="ddp (replicated, gradient_as_bucket_view) or fsdp2 (sharded over --world_size)")
    memory.add_argument("--world_size", type=int, default=8, help="GPUs (sharding divides by it)")
    memory.add_argument("--proj_drop", type=float, default=0.0,
                        help="dropout in the middle blocks (its masks are kept; the H and G recipes use 0.2)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.world_size < 1:
        parser.error("--batch_size and --world_size must be >= 1")
    row = describe(args.model, args.img_size, args.num_classes)
    if args.memory:
        row.update(memory_row(args))
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"{'model':<16}{row['model']}")
    print(f"{'image':<16}{row['img_size']}x{row['img_size']}")
    print(f"{'parameters':<16}{row['params'] / 1e6:.1f}M ({row['params']:,})")
    print(f"{'GMACs/forward':<16}{row['gmacs']:.2f}  (multiply-adds, batch 1; the paper's 'Gflops')")
    print(f"{'tokens':<16}{row['tokens']}")
    print(f"{'patch dim':<16}{row['patch_dim']}")
    print(f"{'hidden size':<16}{row['hidden_size']}")
    print("bottleneck d'".ljust(16) + str(row["bottleneck_dim"]))
    if args.memory:
        print_memory(row)
    return 0


def memory_row(args) -> dict:
    from jitlab.train.fitplan import fixed_bytes, fixed_bytes_per_param
    from jitlab.core.models.memory import count_activations
    from jitlab.core.models.registry import model_kwargs

    init_args = model_kwargs(args.model) | {"img_size": args.img_size, "num_classes": args.num_classes,
                                            "proj_drop": args.proj_drop}
    count = count_activations({"class_path": "jitlab.core.models.JiT", "init_args": init_args})
    per_param = fixed_bytes_per_param(args.strategy, args.world_size)
    fixed = fixed_bytes(count, args.strategy, args.world_size)
    return {
        "batch_size": args.batch_size, "strategy": args.strategy, "world_size": args.world_size,
        "fixed_bytes_per_param": sum(per_param.values()), "fixed_bytes_per_param_parts": per_param,
        "fixed_bytes": {k: int(v) for k, v in fixed.items()},
        "activation_bytes_per_sample": int(count.eager),
        "activation_bytes_per_sample_compiled": int(count.compiled),
        "activation_bytes_per_sample_checkpointed": int(count.checkpointed),
        "activation_bytes_per_sample_checkpointed_compiled": int(count.checkpointed_compiled),
        "attention_bytes_per_sample": int(count.attention),
        "peak_bytes_per_gpu": int(sum(fixed.values()) + args.batch_size * count.compiled),
        "peak_bytes_per_gpu_eager": int(sum(fixed.values()) + args.batch_size * count.eager),
        "memory_method": count.method + " (bf16 autocast; predictions, not measured on a GPU)",
    }


def print_memory(row: dict) -> None:
    gib, mib = 2 ** 30, 2 ** 20
    print(f"\nmemory per GPU in training, {row['strategy']} on {row['world_size']} GPU(s) "
          "(predicted from counts on CPU; not measured on a GPU):")
    parts = [*row["fixed_bytes"].items(), ("fixed", sum(row["fixed_bytes"].values()))]
    per_param = {**row["fixed_bytes_per_param_parts"], "fixed": row["fixed_bytes_per_param"]}
    for part, value in parts:
        per = f"  ({per_param[part]:g} B/param)" if per_param.get(part) is not None else ""
        print(f"  {part.replace('_', ' '):<22}{value / gib:8.2f} GiB{per}")
    print(f"  activations / sample  eager {row['activation_bytes_per_sample'] / mib:.0f} MiB (attention "
          f"probabilities {row['attention_bytes_per_sample'] / mib:.0f}), compiled "
          f"{row['activation_bytes_per_sample_compiled'] / mib:.0f} MiB")
    print(f"  checkpointed / sample eager {row['activation_bytes_per_sample_checkpointed'] / mib:.0f} MiB, compiled "
          f"{row['activation_bytes_per_sample_checkpointed_compiled'] / mib:.0f} MiB")
    print(f"  peak at {row['batch_size']}/GPU        compiled {row['peak_bytes_per_gpu'] / gib:.1f} GiB, eager "
          f"{row['peak_bytes_per_gpu_eager'] / gib:.1f} GiB")
