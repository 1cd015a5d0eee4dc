"""The OpenAPI 3.1 document served at /openapi.json, built from this node's own limits.

Complete: every route of `App.route_table()` is here (tests/node/test_openapi.py checks it). True:
its limits are the node's settings and the auth policy in force, so a request it calls valid
is never refused for its form, and one it calls invalid is refused; schemathesis checks both
against a running node. Where JSON Schema cannot say a rule exactly (UTF-8 byte limits, a
role that must exist), the schema is the sound side of it and the description says the rest.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...auth_policy import AuthPolicy
from ...config import Settings
from . import catalog, data, operations, replication, security
from .parts import components, finish

_OPEN_OPERATIONS = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/v1/auth/login"),
    ("GET", "/v1/replication/system"),
}


def spec(settings: Settings, policy: AuthPolicy) -> dict[str, Any]:
    shared = components()
    shared["schemas"] |= catalog.schemas() | security.schemas()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "KVStore++",
            "version": "1",
            "description": 'Errors are {"error": {"code", "message"}}. Limits of this node: '
            f"max_key_bytes {settings.max_key_bytes}, max_value_bytes {settings.max_value_bytes}, "
            f"max_body_bytes {settings.max_body_bytes}, max_txn_ops {settings.max_txn_ops}, "
            f"max_scan_limit {settings.max_scan_limit}, max_ttl_s {settings.max_ttl_s}, "
            f"max_requests_in_flight {settings.max_requests_in_flight} (operator_reserved_requests "
            f"{settings.operator_reserved_requests} more for the probes and a superuser's admin API), "
            f"max_requests_in_flight_per_address "
            f"{settings.max_requests_in_flight_per_address}, max_body_bytes_in_flight "
            f"{settings.max_body_bytes_in_flight}, max_login_body_bytes {settings.max_login_body_bytes}, "
            f"http_header_timeout_ms {settings.http_header_timeout_ms}, http_body_timeout_ms "
            f"{settings.http_body_timeout_ms}.",
        },
        "components": shared,
        "security": [{"bearer": []}],
        "paths": finish(
            {
                **data.paths(settings, policy),
                **catalog.paths(policy),
                **security.paths(),
                **operations.paths(),
                **replication.paths(),
            },
            _OPEN_OPERATIONS,
        ),
    }


def document(settings: Settings, policy: AuthPolicy) -> bytes:
    return orjson.dumps(spec(settings, policy))
