"""What the tests share: real nodes (harness), kvctl as a subprocess, logins, waiting, raw HTTP,
fake peers, replication clusters and the compose cluster's Docker checks."""
