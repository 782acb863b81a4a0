"""The artifact: the run directory and how it is made, its model, its heatmaps and map,
reports, and scoring new images against it."""
