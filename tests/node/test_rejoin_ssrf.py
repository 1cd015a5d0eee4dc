"""`POST /v1/admin/rejoin` is no server-side request forgery (issue 10 item 5): the node sends its
replication credentials only to a node of its own cluster (one whose unauthenticated
`/v1/replication/system` carries this system's identifier), only to a base URL (no path, query
or `user:pw@`), and its errors name a status code, never what the target answered."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.fake_peer import FakePeer, json_answer
from support.harness import MakeNode, NodeProcess

REPLICATION_PASSWORD = "replicator-password"
REPLICATION_ENV = {"KVSTORE_REPLICATION_USER": "replicator", "KVSTORE_REPLICATION_PASSWORD": REPLICATION_PASSWORD}
PAGE_TEXT = "internal-page-text-7f3a"  # what a target answers; must never come back in an error


@pytest.fixture
def node(node_factory: MakeNode) -> NodeProcess:
    return node_factory("p", env=REPLICATION_ENV, args=["--name", "p"]).start()


@pytest.fixture
def fake() -> Iterator[FakePeer]:
    peer = FakePeer((200, "text/plain", PAGE_TEXT.encode()))
    yield peer
    peer.close()


def rejoin(node: NodeProcess, url: str) -> httpx.Response:
    with node.client() as admin:
        return admin.post("/v1/admin/rejoin", json={"primary": url})


def credentials_sent(peer: FakePeer) -> list[str]:
    """Every request of `peer` that carried a credential of the node's replication user."""
    return [
        f"{method} {path}"
        for method, path, headers, body in peer.received
        if "authorization" in headers or REPLICATION_PASSWORD.encode() in body or b"replicator" in body
    ]


def system_identifier(node: NodeProcess) -> str:
    with node.client() as admin:
        return str(admin.get("/v1/status").json()["system_identifier"])


def test_an_arbitrary_url_is_refused_before_any_credential_is_sent(node: NodeProcess, fake: FakePeer) -> None:
    answer = rejoin(node, fake.url)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_a_cluster_node", answer.text
    assert credentials_sent(fake) == []
    assert [(method, path) for method, path, _, _ in fake.received] == [("GET", "/v1/replication/system")]
    assert PAGE_TEXT not in answer.text


def test_a_node_of_another_system_is_refused_before_any_credential_is_sent(node: NodeProcess, fake: FakePeer) -> None:
    fake.answers["/v1/replication/system"] = json_answer({"system_identifier": "12345"})
    answer = rejoin(node, fake.url)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_a_cluster_node", answer.text
    assert credentials_sent(fake) == []
    assert "12345" not in answer.text


@pytest.mark.parametrize(
    "shape",
    [
        "{url}/v1/auth/login",
        "{url}/anything",
        "{url}?next=/x",
        "{url}/#frag",
        "http://replicator:pw@{host}",
        "http://u@{host}",
    ],
)
def test_a_url_with_a_path_query_or_userinfo_is_refused_and_not_contacted(
    node: NodeProcess, fake: FakePeer, shape: str
) -> None:
    url = shape.format(url=fake.url, host=fake.url.removeprefix("http://"))
    answer = rejoin(node, url)
    assert answer.status_code == 400, answer.text
    assert "without a path, query" in answer.json()["error"]["message"]
    assert fake.received == []


@pytest.mark.parametrize("status", [401, 404, 500])
def test_an_error_answer_is_named_by_its_status_never_echoed(node: NodeProcess, fake: FakePeer, status: int) -> None:
    fake.answers["/v1/replication/system"] = (status, "text/html", f"<h1>{PAGE_TEXT}</h1>".encode())
    answer = rejoin(node, fake.url)
    assert answer.status_code == 400, answer.text
    assert PAGE_TEXT not in answer.text and str(status) in answer.json()["error"]["message"]
    assert credentials_sent(fake) == []


def test_a_login_refusal_from_a_confirmed_target_is_not_echoed(node: NodeProcess, fake: FakePeer) -> None:
    # A target that knows the system identifier passes the check; what it answers still stays out.
    fake.answers["/v1/replication/system"] = json_answer({"system_identifier": system_identifier(node)})
    fake.answers["/v1/auth/login"] = json_answer({"error": {"code": "x", "message": PAGE_TEXT}}, 401)
    answer = rejoin(node, fake.url)
    assert answer.status_code == 400, answer.text
    assert PAGE_TEXT not in answer.text


def test_the_system_route_answers_without_credentials_and_says_nothing_more(node: NodeProcess) -> None:
    answer = httpx.get(f"{node.url}/v1/replication/system")
    assert answer.status_code == 200
    assert answer.json() == {"system_identifier": system_identifier(node)}
