"""Surgery: apply a `PruningPlan` to a model and return a new, smaller one (originals are never mutated)."""
