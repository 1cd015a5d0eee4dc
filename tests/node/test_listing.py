"""Listings cost what the caller may see: ranges its grants allow, a bound on keys examined,
and cursors that never name a key the caller may not read. Against a real node."""

from __future__ import annotations

import httpx

EXAMINED_MAX = 100
HIDDEN = 1_000


def test_a_listing_over_hidden_keys_goes_on_by_cursor_without_naming_them(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(
        env={"KVSTORE_MAX_SCAN_EXAMINED_KEYS": str(EXAMINED_MAX), "KVSTORE_MAX_SCAN_LIMIT": str(EXAMINED_MAX)}
    ).start()
    with node.client() as admin:
        ops = [{"op": "set", "key": f"app:{n:05}:private", "value": "x"} for n in range(HIDDEN)]
        for start in range(0, HIDDEN, 500):
            assert admin.post("/v1/txn", json={"ops": ops[start : start + 500]}).status_code == 200
        for key in ("app:00500:public", "app:99999:public", "zzz:elsewhere"):
            assert admin.put(f"/v1/kv/{key}", content=b"v").status_code == 201
        role = {"name": "public-reader", "grants": [{"actions": ["read"], "pattern": "app:*:public"}]}
        assert admin.post("/v1/admin/roles", json=role).status_code == 201
        user = {"name": "pub", "password": "pub-password-1", "roles": ["public-reader"]}
        assert admin.post("/v1/admin/users", json=user).status_code == 201
    token = httpx.post(f"{node.url}/v1/auth/login", json={"username": "pub", "password": "pub-password-1"}).json()
    with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {token['token']}"}, timeout=10) as pub:
        listed, cursors, after = [], [], None
        while True:
            page = pub.get("/v1/kv", params={"prefix": "", "limit": 1, **({"after": after} if after else {})})
            assert page.status_code == 200, page.text
            listed += [item["key"] for item in page.json()["keys"]]
            after = page.json()["next_after"]
            if after is None:
                break
            if after not in listed:
                cursors.append(after)
        assert listed == ["app:00500:public", "app:99999:public"]
        # Each request examined at most EXAMINED_MAX keys, so the walk over the hidden ones took
        # about HIDDEN / EXAMINED_MAX requests; no cursor named any of them.
        assert HIDDEN // EXAMINED_MAX - 2 <= len(cursors) <= HIDDEN // EXAMINED_MAX + 2
        assert not any("private" in cursor or "app:" in cursor for cursor in cursors)
        reused = pub.get("/v1/kv", params={"prefix": "", "after": cursors[0]})
        assert reused.status_code == 400 and "cursor" in reused.json()["error"]["message"]
        assert pub.get("/v1/kv", params={"prefix": "zzz"}).status_code == 403  # no grant reaches zzz
