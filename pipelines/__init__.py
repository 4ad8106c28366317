"""dgmm pipelines: runs driven by configuration, on top of the `dgmm` library."""
