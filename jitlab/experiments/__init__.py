"""Layer experiments: grids of runs, their reports, the Figure 2 toy and the benchmarks."""
