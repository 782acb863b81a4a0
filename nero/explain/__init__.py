"""Why: input-space heatmaps (LRP rules, training envelope, attribution, drawing) and the map."""
