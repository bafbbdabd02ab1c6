"""A trained model: load, score, export."""
