"""kvchaos: a fault-injection harness for KVStore++ clusters.

A run starts a cluster through a backend (`process`: local kvstored processes; `docker`: the
compose cluster), drives a workload that records every operation it makes, injects the faults
of one scenario (kill, pause, partition, WAL damage, promotion), then checks the recorded
history against the cluster's final state (durability, convergence, per-key linearizability)
and writes a JSON and an HTML report. Modules: history (the record), workload (the clients),
checkers and linearizability (pure verdicts), backend / process / proxy / compose / waldamage
(clusters and faults), scenarios and runner (what a run does), report (what it writes), cli
(`kvchaos`). launcher starts kvstored children on 127.0.0.1, for this harness and for the
tests, the benchmarks and `make run` (kvstore.cli.cluster) too.
"""
