"""`lmforge lora merge BASE ADAPTER OUT`: fold a LoRA adapter (PEFT layout, ours or made by
Hugging Face's peft) into a base model's weights, writing a plain model directory."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("lora", help="LoRA adapters: merge one into its base model")
    commands = p.add_subparsers(dest="lora_command", metavar="COMMAND", required=True)
    merge = commands.add_parser(
        "merge",
        help="fold a PEFT adapter into its base model's weights",
        description="Read BASE (an lmforge or Hugging Face model directory) and ADAPTER (a "
        "directory with adapter_config.json and adapter_model.safetensors, such as "
        "`lmforge finetune --method lora` writes in OUTPUT/adapter or peft saves), add each "
        "adapter's (alpha / r) B A to its weight and write OUT, an lmforge model directory "
        "(with BASE's tokenizer). A task head the adapter saved (PEFT's modules_to_save, "
        "e.g. a classifier) replaces BASE's head.",
    )
    merge.add_argument("base", help="base model directory")
    merge.add_argument("adapter", help="PEFT LoRA adapter directory")
    merge.add_argument("output", help="directory for the merged model")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    merge.set_defaults(run=run_merge)


def run_merge(args, extra) -> int:
    from lmforge.errors import LmforgeError
    from lmforge.fileio import check_new_directory, staged_directory
    from lmforge.infer.loading import load_tokenizer
    from lmforge.models import from_pretrained, save_model_dir
    from lmforge.models.lora import adapter_head, load_peft_adapter, merge_lora
    from lmforge.tasks import with_head

    check_new_directory(args.output, args.overwrite)
    model = from_pretrained(args.base)
    head = adapter_head(args.adapter)
    if head is not None and (model.config.head, model.config.num_labels) != head:
        model = with_head(model, *head)  # a task head trained with the adapter: its place
    adapted = load_peft_adapter(model, args.adapter)
    merge_lora(model)
    with staged_directory(args.output) as out:  # all of it, or nothing
        save_model_dir(model, out)
        try:
            load_tokenizer(args.base).save(out)
            note = "tokenizer.json"
        except LmforgeError as e:
            note = f"no tokenizer ({e})"
    print(f"merged {len(adapted)} adapted layers into {Path(args.output)}: {note}")
    return 0
