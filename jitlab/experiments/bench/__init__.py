"""`jitlab bench` (training and sampling speed, MFU, peak memory of one model) and `jitlab bench-data`
(data-loading throughput, the folder source against the shards)."""
