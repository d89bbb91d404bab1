"""Retrieval-augmented generation: the Qdrant store, retrieval, prompts and answer post-processing."""
