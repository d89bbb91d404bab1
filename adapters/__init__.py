"""LoRA adapter runtime: registry and cards, loading and toggling, pair encoding. Training sits apart in `adapters.training`, which stands on the engine."""
