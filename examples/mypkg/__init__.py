"""A researcher's own package, as the pipeline sees it: a model builder and a data loader."""
