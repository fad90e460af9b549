"""Property tests: one module per document, run against every implementation of the operations they touch."""
