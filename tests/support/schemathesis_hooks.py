"""Schemathesis hooks of tests/node/test_openapi.py (loaded through schemathesis.toml).

Schemathesis learns values from responses (GET /v1/admin/users lists user names, GET /v1/kv
lists the _sys.* catalog keys to a superuser) and feeds them, through links, to other
operations without checking them against those operations' parameter schemas. It also counts
a key as invalid whenever it breaks the key's schema, which can only state the node's byte
limit in characters. These cases are left out; every other one is run:

- the run's own user and API key in a path: deleting, locking or demoting that user, or
  revoking its key, would end the run's access, and every later request would be refused;
- positive cases whose path parameters break their own schema (DELETE /v1/admin/roles/reader
  for a built-in role, DELETE /v1/kv/_sys.users:... for a catalog key): the document calls
  them invalid, so they are no test of valid data, and one could delete the run's own user;
- negative cases whose only fault is a key longer in characters than the schema's sound bound
  but within the node's limit in UTF-8 bytes (the parameter's description): they are valid.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from jsonschema import Draft202012Validator

RUN_USER = "st-runner"
RUN_KEY = "st-runner-key"


def _valid_in_bytes(value: str, schema: dict[str, Any]) -> bool:
    """`value` breaks only the character bounds of a UTF-8 byte limit (parts.utf8_text: its
    first branch is the ASCII one, whose length bound is the byte limit)."""
    limit = schema["anyOf"][0]["maxLength"]
    rest = {name: rule for name, rule in schema.items() if name != "anyOf"}
    return 0 < len(value.encode()) <= limit and Draft202012Validator(rest).is_valid(value)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    path_parameters = case.path_parameters or {}
    if path_parameters.get("name") in (RUN_USER, RUN_KEY):
        return False
    positive = case.meta is None or case.meta.generation.mode.is_positive
    for parameter in case.operation.path_parameters:
        value = path_parameters.get(parameter.name)
        if not isinstance(value, str) or parameter.get_validator().is_valid(value):
            continue
        if positive:
            return False
        schema = parameter.definition["schema"]
        if "anyOf" in schema and _valid_in_bytes(value, schema):
            return False
    return True
