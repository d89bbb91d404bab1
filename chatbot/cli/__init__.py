"""Command lines: rag-chat, rag-search and rag-eval."""
