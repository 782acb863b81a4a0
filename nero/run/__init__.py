"""The artifact: the run directory, evaluating folders into it, its model, reports, scoring."""
