"""kvctl's commands, one module per group of them; `kvstore.cli.kvctl` assembles them into the app."""
