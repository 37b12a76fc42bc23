"""Config heuristics: pure Python performance models, no GPU needed."""
