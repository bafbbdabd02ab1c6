"""Evaluation: protocol, eval and probe runs, comparisons, benchmark matrices, studies."""
