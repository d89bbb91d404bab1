"""LoRA adapters: registry, load/toggle/merge, training."""
