"""Layer experiments: grids of runs (the Figure 2 toy is one), their reports and the benchmarks."""
