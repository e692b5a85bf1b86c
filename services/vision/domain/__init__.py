"""Pure rules of the vision service: camera ids, the algorithm catalogue, the alarm pipeline."""
