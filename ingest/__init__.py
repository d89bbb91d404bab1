"""Ingestion: load -> clean -> split -> embed -> upsert into Qdrant."""
