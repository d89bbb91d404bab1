"""Train a LoRA adapter on pairs, with a held-out split, checkpoints to resume from, and a card.

A plain PyTorch loop rather than `transformers.Trainer`: one example per forward pass
(no padding, so no compute spent on it), gradient accumulation for `batch_size`, AdamW
with a linear warm-up and a cosine decay, and a checkpoint (adapter weights, optimiser, step, RNG)
every `checkpoint_every` steps, written beside the last one and renamed over it so an
interrupted run always finds a whole checkpoint. Training is fp32: bf16 autocast on
these CPUs measured ~20x slower per step.

The finished adapter is written to a staging folder and renamed into place, with its
card (`ragtune.json`), so the registry never sees half an adapter.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.card import AdapterCard
from adapters.pairs import IGNORE, Pair, encode
from adapters.registry import WEIGHTS_FILE
from chatbot.core.errors import RagtuneError, TrainingDataError
from chatbot.core.files import atomic_folder
from chatbot.llm.loading import LocalModel

PROBE_PAIRS = 4  # held-out pairs kept on the card, for the "is it applied?" probe


@dataclass(frozen=True)
class TrainConfig:
    """How to train: LoRA shape, optimiser, schedule, split and seed."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    learning_rate: float = 5e-4
    steps: int = 200
    batch_size: int = 1
    warmup_steps: int = 10
    eval_fraction: float = 0.1
    max_tokens: int = 1536
    checkpoint_every: int = 25
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # recorded on the card as given

    def __post_init__(self) -> None:
        checks = [
            ("rank", self.rank >= 1),
            ("alpha", self.alpha > 0),
            ("dropout", 0 <= self.dropout < 1),
            ("learning_rate", 0 < self.learning_rate < 1),
            ("steps", self.steps >= 1),
            ("batch_size", self.batch_size >= 1),
            ("warmup_steps", self.warmup_steps >= 0),
            ("eval_fraction", 0 <= self.eval_fraction < 0.5),
            ("max_tokens", self.max_tokens >= 16),
            ("checkpoint_every", self.checkpoint_every >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise TrainingDataError(f"{name}={getattr(self, name)!r} is not allowed for training.")


def split(pairs: list[Pair], config: TrainConfig) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): a seeded shuffle, so the same file and seed give the same split."""
    order = list(pairs)
    random.Random(config.seed).shuffle(order)
    held = round(len(order) * config.eval_fraction)
    if len(order) - held < 1:
        raise TrainingDataError(f"{len(pairs)} pairs leave nothing to train on: add pairs or lower eval_fraction.")
    return order[held:], order[:held]


def train(
    local: LocalModel,
    pairs: list[Pair],
    config: TrainConfig,
    target: Path,
    *,
    data_path: str = "",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an adapter for `local` on `pairs`, write it to `target` with its card, and return the card."""
    import torch  # the training loop needs it; importing this module must not
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    train_pairs, held_out = split(pairs, config)
    encoded, skipped = _encode_all(train_pairs, local.tokenizer, config.max_tokens)
    held_encoded, _ = _encode_all(held_out, local.tokenizer, config.max_tokens)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
    )
    model = get_peft_model(local.model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    work = target.parent / f".{target.name}.training"
    state = {"step": 0, "losses": []}
    if resume and (work / "checkpoint" / "state.json").is_file():
        state = _load_checkpoint(work / "checkpoint", model, optimizer, schedule)
    elif work.exists():
        shutil.rmtree(work)
    base_eval = state.get("base_eval_loss")
    if base_eval is None:
        base_eval = state["base_eval_loss"] = _eval_loss(model, held_encoded, torch, adapter_on=False)

    order = _order(len(encoded), config, state["step"])
    bar = tqdm(total=config.steps, initial=state["step"], desc=f"training {target.name}", disable=not progress)
    model.train()
    while state["step"] < config.steps:
        optimizer.zero_grad()
        step_loss = 0.0
        for _ in range(config.batch_size):
            ids, labels = encoded[next(order)]
            loss = _loss(model, ids, labels, torch) / config.batch_size
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        state["step"] += 1
        state["losses"].append(round(step_loss, 4))
        state["seconds"] = state.get("seconds", 0.0) + time.perf_counter() - started
        started = time.perf_counter()
        bar.update(1)
        bar.set_postfix(loss=f"{_recent(state['losses']):.3f}")
        if state["step"] % config.checkpoint_every == 0 and state["step"] < config.steps:
            _save_checkpoint(work / "checkpoint", model, optimizer, schedule, state)
    bar.close()
    model.eval()
    card = AdapterCard(
        name=target.name,
        base_model=local.name,
        rank=config.rank,
        alpha=config.alpha,
        training={**asdict(config), "data": data_path, "pairs": len(pairs), "train_pairs": len(encoded)},
        steps=state["step"],
        final_loss=round(_recent(state["losses"]), 4),
        held_out={
            "pairs": len(held_encoded),
            "base_loss": base_eval,
            "adapter_loss": _eval_loss(model, held_encoded, torch, adapter_on=True),
        },
        probe=[{"messages": p.messages, "answer": p.answer} for p in held_out[:PROBE_PAIRS]],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={
            "target_modules": config.target_modules,
            "skipped_too_long": skipped,
            "loss_curve": _curve(state["losses"]),
            "weights_dtype": "float16",
            "train_seconds": round(state.get("seconds", 0.0) + time.perf_counter() - started, 1),  # resumes add up
        },
    )
    _publish(model, card, target)
    shutil.rmtree(work, ignore_errors=True)
    return card


def _encode_all(pairs: list[Pair], tokenizer: Any, max_tokens: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    encoded = [encode(pair, tokenizer) for pair in pairs]
    kept = [item for item in encoded if len(item[0]) <= max_tokens]
    if pairs and not kept:
        raise TrainingDataError(f"every pair is over max_tokens={max_tokens} tokens: raise it or shorten the pairs.")
    return kept, len(encoded) - len(kept)


def _order(count: int, config: TrainConfig, done_steps: int):
    # The same seeded sequence of epochs every time, skipped forward on resume.
    rng = random.Random(config.seed)
    taken = 0
    while True:
        epoch = list(range(count))
        rng.shuffle(epoch)
        for index in epoch:
            if taken >= done_steps * config.batch_size:
                yield index
            taken += 1


def _lr_factor(step: int, config: TrainConfig) -> float:
    # transformers.get_cosine_schedule_with_warmup decays the same way, but its warmup starts at 0 (step/warmup)
    # where this one starts at 1/(warmup+1): switching would change every adapter `make adapter` rebuilds.
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    remaining = max(config.steps - config.warmup_steps, 1)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - config.warmup_steps) / remaining)))


def _loss(model: Any, ids: list[int], labels: list[int], torch: Any) -> Any:
    return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss


def _eval_loss(model: Any, encoded: list[tuple[list[int], list[int]]], torch: Any, *, adapter_on: bool) -> float | None:
    """Mean answer-token loss on the held-out pairs, with the adapter on or off."""
    if not encoded:
        return None
    was_training = model.training
    model.eval()
    total = tokens = 0
    with torch.no_grad():
        for ids, labels in encoded:
            if adapter_on:
                loss = _loss(model, ids, labels, torch)
            else:
                with model.disable_adapter():
                    loss = _loss(model, ids, labels, torch)
            count = sum(1 for label in labels[1:] if label != IGNORE)
            total += loss.item() * count
            tokens += count
    model.train(was_training)
    return round(total / tokens, 4)


def _recent(losses: list[float], window: int = 10) -> float:
    tail = losses[-window:]
    return sum(tail) / len(tail) if tail else float("nan")


def _curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """[step, mean loss] at up to `points` evenly spaced steps: small enough for the card."""
    if not losses:
        return []
    every = max(1, len(losses) // points)
    buckets = [losses[i : i + every] for i in range(0, len(losses), every)]
    return [[min((n + 1) * every, len(losses)), round(sum(b) / len(b), 4)] for n, b in enumerate(buckets)]


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, schedule: Any, state: dict[str, Any]) -> None:
    import torch

    with atomic_folder(folder, replace=True) as staging:
        model.save_pretrained(staging)
        torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, staging / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, staging / "rng.pt")
        (staging / "state.json").write_text(json.dumps(state))


def _load_checkpoint(folder: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    saved, rng = _read_pickle(folder / "optimizer.pt", torch), _read_pickle(folder / "rng.pt", torch)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    return json.loads((folder / "state.json").read_text())


def _read_pickle(path: Path, torch: Any) -> Any:
    # Tensors, numbers, strings and containers only: a full unpickle would run any code a swapped file names.
    # Everything _save_checkpoint writes (optimiser and schedule state, the RNG states) loads this way.
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise RagtuneError(
            f"The checkpoint file {path} holds more than tensors and plain values, so it is not loaded "
            f"({str(error).splitlines()[0]}): delete {path.parent.parent} and train again without --resume."
        ) from error


def compact(folder: Path) -> None:
    """Store the adapter's weights in fp16: half the size to commit, and they load back into fp32 layers."""
    from safetensors.torch import load_file, save_file

    path = folder / WEIGHTS_FILE
    weights = load_file(path)
    save_file({name: tensor.half() for name, tensor in weights.items()}, path, metadata={"format": "pt"})


def _publish(model: Any, card: AdapterCard, target: Path) -> None:
    with atomic_folder(target, replace=True) as staging:  # re-training replaces the adapter of that name
        model.save_pretrained(staging)
        (staging / "README.md").unlink(missing_ok=True)  # peft's empty model-card template; the card is ours
        compact(staging)
        config_path = staging / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = card.base_model  # the name, not this machine's cache path
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        card.write(staging)
