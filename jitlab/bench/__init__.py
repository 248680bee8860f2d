"""`jitlab bench`: training and sampling speed of one model in one process (images/s, MFU, peak memory).

- ``machine``: the measured matmul peak of the device, peak memory, the machine's facts.
- ``train``: images/s through the Lightning Trainer `jitlab fit` builds, and through a plain loop of the same module.
- ``sample``: images/s of `jitlab sample`'s generation path and of a plain reference sampler.
- ``run``: one model's measurements as one row; ``cli``: the verb (table, JSON, markdown report).
"""
