"""flowsd benchmarks (`make bench`): one module per area, results as JSON and a table."""
