"""Demo data for the built-in default models: bundled photos, cartoon filter, edit families, evaluation."""
