"""`jitlab bench`: training and sampling speed of one model in one process (images/s, MFU, peak memory).

- ``machine``: the measured matmul peak of the device, peak memory, the machine's facts.
- ``train``: images/s through the Lightning Trainer `jitlab fit` builds, and through a plain loop of the same module.
- ``sample``: images/s of `jitlab sample`'s generation path and of a plain reference sampler.
- ``run``: one model's measurements as one row; ``report``: the table and the markdown page.
- ``data``: data-loading throughput, the folder source against the shards (`jitlab bench-data`).

The verbs are ``jitlab.commands.bench`` and ``jitlab.commands.bench_data``.
"""
