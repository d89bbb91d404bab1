"""Adapter training: pairs from seed questions, LoRA training, calibration, and rag-train-adapter."""
