"""AutoML: features per modality, the search, the registry, jobs and batch prediction."""
