"""KVStore++'s benchmarks, run from the repository's root as `python -m bench.<name>` (`make bench`
and its siblings); results in bench/results/. Never installed: the wheel ships the node only."""
