"""Evaluation: question sets, metrics, runs over the grid, and reports."""
