"""Why: LRP rules per architecture, the training envelope, batched attribution, drawing."""
