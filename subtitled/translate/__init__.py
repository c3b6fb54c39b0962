"""The translate stage: the model manifest (and, later, the streaming translator)."""
