"""Tokens: claims are checked in one place, and forged JWTs of every kind are refused (401).

The forged kinds are the probes of issue 10 that held up; they stay tests so they stay so.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from support.harness import NodeProcess
from support.tokens import assemble, resigned, signing_key

# A public key an attacker might present as an HMAC secret (the RS256/HS256 confusion).
PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("tokens") / "node")
    try:
        yield process.start()  # type: ignore[misc]
    finally:
        process.close()


def status_with(node: NodeProcess, token: str) -> httpx.Response:
    return httpx.get(f"{node.url}/v1/status", headers={"authorization": f"Bearer {token}"}, timeout=30)


def real_claims(node: NodeProcess) -> dict[str, Any]:
    return dict(jwt.decode(node.token(), options={"verify_signature": False}))


def test_the_resigned_token_itself_is_accepted(node: NodeProcess) -> None:
    """So the refusals below are for the claim or the forgery, not for the signing helper."""
    response = status_with(node, resigned(node, node.token(), real_claims(node)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gen": "x"}, "'gen' must be an integer"),
        ({"gen": 1.5}, "'gen' must be an integer"),
        ({"gen": True}, "'gen' must be an integer"),
        ({"gen": None}, 'missing the "gen" claim'),
        ({"gen": [1]}, "'gen' must be an integer"),
        ({"gen": 10**40}, "no longer valid"),
        ({"sub": ""}, "'sub' must be a user name"),
        ({"sub": 5}, "Subject must be a string"),
        ({"sub": ["admin"]}, "Subject must be a string"),
        ({"exp": "later"}, "(exp) must be an integer"),
        ({"exp": None}, 'missing the "exp" claim'),
        ({"iat": "then"}, "(iat) must be an integer"),
        ({"sub": None}, 'missing the "sub" claim'),
    ],
)
def test_a_correctly_signed_token_with_a_claim_of_the_wrong_type_is_a_401(
    node: NodeProcess, change: dict[str, Any], message: str
) -> None:
    response = status_with(node, resigned(node, node.token(), {**real_claims(node), **change}))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize("missing", ["sub", "gen", "exp", "iat"])
def test_a_correctly_signed_token_missing_a_claim_is_a_401(node: NodeProcess, missing: str) -> None:
    claims = {name: value for name, value in real_claims(node).items() if name != missing}
    response = status_with(node, resigned(node, node.token(), claims))
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized", response.text


@pytest.mark.parametrize(
    "payload", ['["admin"]', '"admin"', "42", "null", "{", '{"sub": "admin", "exp": Infinity}', "\u00ff\u00fe"]
)
def test_a_correctly_signed_payload_that_is_not_a_claims_object_is_a_401(node: NodeProcess, payload: str) -> None:
    response = status_with(node, resigned(node, node.token(), payload))
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized", response.text


def forgeries(node: NodeProcess, jwks_url: str) -> dict[str, str]:
    """Every kind of forged token of issue 10, each claiming to be the admin."""
    claims = real_claims(node)
    kid, secret = signing_key(node)
    hs256 = {"alg": "HS256", "typ": "JWT", "kid": kid}
    guessed = {
        f"HS256 with key {key!r}": assemble(hs256, claims, key) for key in (b"", b"secret", b"kvstore", b"admin")
    }
    return {
        **guessed,
        "alg none": assemble({**hs256, "alg": "none"}, claims, None),
        "alg None": assemble({**hs256, "alg": "None"}, claims, None),
        "alg NONE, a real signature": assemble({**hs256, "alg": "NONE"}, claims, None) + "x" * 43,
        "HS256 without a signature": assemble(hs256, claims, None),
        "HS256 keyed with the kid": assemble(hs256, claims, kid.encode()),
        "HS384 with a guessed key": assemble({**hs256, "alg": "HS384"}, claims, b"secret"),
        "HS512 with a guessed key": assemble({**hs256, "alg": "HS512"}, claims, b"secret"),
        "HS384 with the real key": assemble({**hs256, "alg": "HS384"}, claims, secret),
        "HS512 with the real key": assemble({**hs256, "alg": "HS512"}, claims, secret),
        "unknown kid": assemble({**hs256, "kid": "0" * 16}, claims, secret),
        "path-like kid": assemble({**hs256, "kid": "../../x"}, claims, secret),
        "absolute path kid": assemble({**hs256, "kid": "/dev/null"}, claims, b""),
        "very long kid": assemble({**hs256, "kid": "k" * 20_000}, claims, secret),
        "kid a list": assemble({**hs256, "kid": [kid]}, claims, secret),
        "kid a number": assemble({**hs256, "kid": 0}, claims, secret),
        "no kid": assemble({"alg": "HS256", "typ": "JWT"}, claims, secret),
        "jku elsewhere": assemble({"alg": "RS256", "kid": "attacker", "jku": jwks_url}, claims, b"x"),
        "x5u elsewhere": assemble({"alg": "RS256", "kid": "attacker", "x5u": jwks_url}, claims, b"x"),
        "jku with HS256": assemble({**hs256, "kid": "attacker", "jku": jwks_url}, claims, b"secret"),
        "embedded jwk": assemble(
            {"alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}, "kid": "attacker"}, claims, b"secret"
        ),
        "RS256, an attacker's key": assemble({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, b"x"),
        "PS256, an attacker's key": assemble({"alg": "PS256", "typ": "JWT", "kid": kid}, claims, b"x"),
        "ES256, an attacker's key": assemble({"alg": "ES256", "typ": "JWT", "kid": kid}, claims, b"x"),
        "EdDSA, an attacker's key": assemble({"alg": "EdDSA", "typ": "JWT", "kid": kid}, claims, b"x"),
        "public key as HMAC secret": assemble(hs256, claims, PUBLIC_KEY_PEM.encode()),
        "public key as HMAC secret, no kid": assemble({"alg": "HS256"}, claims, PUBLIC_KEY_PEM.encode()),
        "real signature, other payload": _swap_payload(node.token(), {**claims, "sub": "root"}),
        "real signature, later exp": _swap_payload(node.token(), {**claims, "exp": claims["exp"] + 86_400}),
    }


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    other = assemble({}, claims, None).split(".")[1]
    return f"{header}.{other}.{signature}"


def test_forged_tokens_of_every_kind_are_refused_and_no_key_url_is_fetched(node: NodeProcess) -> None:
    with socket.socket() as listener:  # where jku/x5u point: the node must never connect here
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        jwks_url = f"http://127.0.0.1:{listener.getsockname()[1]}/.well-known/jwks.json"
        for name, token in forgeries(node, jwks_url).items():
            for path in ("/v1/status", "/v1/kv/anything", "/v1/admin/users"):
                response = httpx.get(f"{node.url}{path}", headers={"authorization": f"Bearer {token}"}, timeout=30)
                assert response.status_code == 401, (name, path, response.status_code, response.text)
                assert response.json()["error"]["code"] == "unauthorized", (name, response.text)
                assert secret_free(response.text, node)
        time.sleep(0.2)  # a fetch would have been started by now; nothing may have connected
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "Traceback" not in node.log()


def secret_free(text: str, node: NodeProcess) -> bool:
    return signing_key(node)[1].decode() not in text
