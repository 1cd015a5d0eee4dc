"""What the tests share, one job per module: real kvstored processes (harness), kvctl as a
subprocess (kvctl_runner), HTTP logins (sessions), polling (waiting), replication clusters
(replication), an in-process engine (engine), raw HTTP (rawhttp), fake peers (fake_peer),
hand-made JWTs (tokens), older data directories (olddata), the schemathesis hooks and the
Docker checks of the compose tests (docker_cli). Imported as `support.<module>`: pytest's
pythonpath puts tests/ on sys.path."""
