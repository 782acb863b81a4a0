"""Images in: the one image reader, class-folder data sets, data-set recipes, the synthetic demo data."""
