"""Transport rules: positions evaluated once across replicas, violations with their evidence."""
