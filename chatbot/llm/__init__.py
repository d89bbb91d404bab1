"""Language models: loading, the local runtime, served models and their tokenizers."""
