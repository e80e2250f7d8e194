"""Event deliveries carry their sender's identity: the functions take events only with a valid OIDC token for their
own audience from the identities that route to them, and the local broker signs and admits as Knative's Broker does
with authentication-oidc on.

The issuer is `ragfn dev`'s own (ragfn.eventing.dev_issuer), served by a real LocalBroker; the functions are real
functions-framework servers. A cluster's service-account issuer cannot run here: where its discovery matters (a
projected token, the cluster CA), a small TLS server stands in for the Kubernetes API server, named as such.
"""

from __future__ import annotations

import copy
import datetime
import os
import sys
import threading
import time

import flask
import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from conftest import REPO, Served, free_port, served
from pydantic import BaseModel
from werkzeug.serving import make_server

from ragfn.cli.dev_events import PUBLISHER_IDENTITY, SinkTokenWriter, delivery_env, dev_broker_audience
from ragfn.core.auth import Unauthorized
from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError
from ragfn.core.oidc import SigningKeys, discovered_issuer
from ragfn.eventing.broker import LocalBroker
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.delivery_auth import DeliveryPolicy, pingsource_identity, trigger_identity
from ragfn.eventing.dev_issuer import DevIssuer
from ragfn.eventing.publish import HttpPublisher, OutboundEvent
from ragfn.eventing.triggers import Delivery, Trigger, load_triggers

pytestmark = pytest.mark.integration
TRIGGERS = load_triggers(REPO / "eventing" / "triggers")


@pytest.fixture(scope="module")
def issuer_broker(tmp_path_factory):
    """A LocalBroker with a DevIssuer on a real port: it serves the issuer's keys, as `ragfn dev` does."""
    port = free_port()
    issuer = DevIssuer(f"http://127.0.0.1:{port}")
    broker = LocalBroker([], {}, DeadLetterStore(tmp_path_factory.mktemp("broker-dlq")), issuer=issuer,
                         audience=dev_broker_audience())
    server = broker.serve("127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield broker
    server.shutdown()


def _function(tmp_path, folder: str, service: str, broker: LocalBroker, **extra: str):
    port = free_port()
    env = dict(os.environ, RAGFN_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO),
               **delivery_env(service, TRIGGERS, f"{broker.issuer.issuer}/openid/v1/jwks"), **extra)
    env.pop("RAGFN_REDIS_URL", None)
    argv = [sys.executable, "-m", "functions_framework", "--target", "handle", "--source",
            str(REPO / "functions" / folder / "main.py"), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    return url, served(argv, tmp_path / f"{folder}.log", url, env), env


@pytest.fixture
def dead_letter(tmp_path, issuer_broker):
    url, server, env = _function(tmp_path, "dead_letter", "ragfn-dead-letter", issuer_broker)
    with server:
        yield url, env["RAGFN_HOME"]


def _event(kind: str = "dev.ragfn.chunks.v1") -> tuple[dict, bytes]:
    headers, body = to_binary(CloudEvent({"type": kind, "source": "test", "id": os.urandom(4).hex()}, {"n": 1}))
    return dict(headers), body


def _stored(home: str) -> int:
    return len(DeadLetterStore(Settings(home=home).dead_letter_path).list())


class _Data(BaseModel):
    n: int = 1


def test_a_function_takes_deliveries_only_with_a_valid_token_from_its_senders(dead_letter, issuer_broker):
    url, home = dead_letter
    issuer = issuer_broker.issuer
    headers, body = _event()
    valid = issuer.token(trigger_identity("ragfn-embed"), "ragfn-dead-letter")

    def post(token: str | None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(url, headers=headers | auth, content=body, timeout=10)

    assert post(None).status_code == 401
    assert post(issuer.token(trigger_identity("ragfn-embed"), "ragfn-chunk")).status_code == 401  # another audience
    forged = DevIssuer(issuer.issuer)  # the same issuer name and claims, another key
    assert post(forged.token(trigger_identity("ragfn-embed"), "ragfn-dead-letter")).status_code == 401
    stale = copy.copy(issuer)  # the same key, tokens that expired two minutes ago
    stale.token_seconds, stale._tokens = -120, {}
    assert post(stale.token(trigger_identity("ragfn-embed"), "ragfn-dead-letter")).json()["message"].startswith(
        "the delivery token has expired")
    # a valid token, but not of a Trigger that routes here: a pod's own account, or a PingSource
    refused = post(issuer.token("ragfn-query", "ragfn-dead-letter"))
    assert refused.status_code == 403 and "RAGFN_EVENT_SENDERS" in refused.json()["hint"]
    assert post(issuer.token(pingsource_identity("ragfn-maintain"), "ragfn-dead-letter")).status_code == 403
    assert _stored(home) == 0  # nothing refused was kept
    accepted = post(valid)
    assert accepted.status_code == 200, accepted.text
    assert _stored(home) == 1


def test_a_refused_delivery_is_answered_before_its_body_is_read(dead_letter):
    def endless():
        chunk = b"x" * 65536
        for _ in range(4096):  # 256 MiB if it were all read
            yield chunk

    started = time.monotonic()
    response = httpx.post(dead_letter[0], headers={"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s",
                                                "ce-id": "1"}, content=endless(), timeout=30)
    assert response.status_code == 401 and time.monotonic() - started < 10


def test_a_cloud_function_checks_the_token_for_its_own_audience_and_senders(tmp_path, issuer_broker):
    url, server, _ = _function(tmp_path, "maintain", "ragfn-maintain", issuer_broker)
    issuer = issuer_broker.issuer
    headers, body = to_binary(CloudEvent({"type": "dev.knative.sources.ping", "source": "test"}, {}))
    with server:
        def post(token: str | None) -> httpx.Response:
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.post(url, headers=dict(headers) | auth, content=body, timeout=60)

        assert post(None).status_code == 401
        assert post(issuer.token(trigger_identity("ragfn-chunk"), "ragfn-maintain")).status_code == 403
        ran = post(issuer.token(pingsource_identity("ragfn-maintain"), "ragfn-maintain"))
        assert ran.status_code == 200, ran.text


def test_the_local_broker_delivers_with_the_triggers_identity(dead_letter, issuer_broker, tmp_path):
    url, home = dead_letter
    route = Trigger(name="ragfn-index", subscriber=url, filter={"type": "t.signed"}, filters=(),
                    delivery=Delivery(retry=0), audience="ragfn-dead-letter")
    issuer_broker.triggers = [route]
    headers, body = _event("t.signed")
    token = issuer_broker.issuer.token(PUBLISHER_IDENTITY, dev_broker_audience())
    assert httpx.post(issuer_broker.issuer.issuer, headers=headers | {"Authorization": f"Bearer {token}"},
                      content=body).status_code == 202
    assert issuer_broker.wait_idle(30) and issuer_broker.dead_letters.list() == []
    assert _stored(home) == 1

    unsigned = LocalBroker([route], {}, DeadLetterStore(tmp_path / "dlq"))  # a Broker without sender identity
    unsigned.accept(CloudEvent({"type": "t.signed", "source": "test"}, {}))
    assert unsigned.wait_idle(30)
    letter, = unsigned.dead_letters.list()
    assert letter.status == 401


def test_the_broker_admits_only_its_senders_tokens(issuer_broker, tmp_path):
    headers, body = _event("nobody.listens")
    url = issuer_broker.issuer.issuer
    assert httpx.post(url, headers=headers, content=body).status_code == 401
    other = issuer_broker.issuer.token(PUBLISHER_IDENTITY, "ragfn-chunk")  # a token for another audience
    assert httpx.post(url, headers=headers | {"Authorization": f"Bearer {other}"}, content=body).status_code == 401
    assert httpx.post(f"{url}/dead-letters/x/replay").status_code == 401

    writer = SinkTokenWriter(issuer_broker.issuer, tmp_path / "oidc" / "token")
    writer.write()
    assert oct(writer.path.stat().st_mode & 0o777) == "0o600"
    event = OutboundEvent("nobody.listens", _Data())
    HttpPublisher(url, token_file=writer.path).publish([event])  # accepted: no error
    with pytest.raises(ConfigError, match="refused nobody.listens: 401"):
        HttpPublisher(url, token_file=tmp_path / "missing").publish([event])


def test_a_delivery_audience_needs_its_senders():
    with pytest.raises(ConfigError, match="RAGFN_EVENT_SENDERS"):
        DeliveryPolicy.from_settings(Settings(event_audience="ragfn-chunk"))
    policy = DeliveryPolicy("ragfn-chunk", "ragfn", ("ragfn-chunk-oidc-eventing.knative.dev-trigger",))
    assert policy.allows("system:serviceaccount:ragfn:ragfn-chunk-oidc-eventing.knative.dev-trigger")
    assert not policy.allows("system:serviceaccount:other:ragfn-chunk-oidc-eventing.knative.dev-trigger")
    assert not policy.allows("system:serviceaccount:ragfn:ragfn-chunk-oidc-eventing.knative.dev-trigger-x")


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes.default.svc")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "ca.crt", tmp_path / "tls.key"


def test_the_cluster_keys_are_fetched_with_the_projected_token_over_the_cluster_ca(tmp_path):
    """A stand-in for the Kubernetes API server's issuer discovery (none can run here): HTTPS with its own CA, and
    the keys only for a bearer token, as system:service-account-issuer-discovery allows."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    issuer = DevIssuer("https://kubernetes.default.svc.cluster.local")
    app = flask.Flask("api-server-stand-in")
    seen = []

    @app.get("/openid/v1/jwks")
    @app.get("/.well-known/openid-configuration")
    def discovery():
        seen.append(flask.request.headers.get("Authorization"))
        if flask.request.headers.get("Authorization") != "Bearer projected-token":
            return "Unauthorized", 401
        return flask.jsonify(issuer.jwks() if flask.request.path.endswith("jwks") else issuer.openid_configuration())

    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=(str(cert), str(key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "token").write_text("projected-token\n")
        url = f"https://localhost:{port}/openid/v1/jwks"
        keys = SigningKeys(url, token_file=tmp_path / "token", ca_file=cert)
        assert keys.key_for(issuer.token("x", "y")) is not None
        assert discovered_issuer(url, token_file=tmp_path / "token", ca_file=cert) == issuer.issuer
        assert seen[-1] == "Bearer projected-token"
        with pytest.raises(Exception, match="401"):
            SigningKeys(url, ca_file=cert).key_for(issuer.token("x", "y"))  # no token: refused
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            SigningKeys(url, token_file=tmp_path / "token").key_for(issuer.token("x", "y"))  # not the cluster CA
        with pytest.raises(Unauthorized, match="does not publish"):
            keys.key_for(DevIssuer(issuer.issuer).token("x", "y"))  # another key: fetched again, still unknown
    finally:
        server.shutdown()


def test_dev_wires_every_routed_function_from_the_triggers():
    jwks = "http://127.0.0.1:1/openid/v1/jwks"
    assert delivery_env("ragfn-chunk", TRIGGERS, jwks)["RAGFN_EVENT_SENDERS"] == trigger_identity("ragfn-chunk")
    assert delivery_env("ragfn-retrieve", TRIGGERS, jwks) == {}  # a JSON function: the gateway's service tokens
    assert delivery_env("ragfn-bucket-events", TRIGGERS, jwks) == {}  # outside senders: RAGFN_SENDER_KEYS_FILE
    dead = delivery_env("ragfn-dead-letter", TRIGGERS, jwks)["RAGFN_EVENT_SENDERS"].split(",")
    assert dead == sorted(trigger_identity(t.name) for t in TRIGGERS)
    for trigger in TRIGGERS:  # every Trigger asks for a token for its subscriber's own audience
        assert trigger.audience == trigger.subscriber


def test_a_token_naming_another_algorithm_for_the_issuers_key_is_a_401(dead_letter, issuer_broker):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer_broker.issuer.issuer, "sub": "system:serviceaccount:ragfn-dev:"
              + trigger_identity("ragfn-embed"), "aud": "ragfn-dead-letter", "iat": now, "exp": now + 60}
    for token in (jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": issuer_broker.issuer.kid}),
                  jwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256",
                             headers={"kid": issuer_broker.issuer.kid})):
        response = httpx.post(dead_letter[0], headers=_event()[0] | {"Authorization": f"Bearer {token}"},
                              content=_event()[1], timeout=10)
        assert response.status_code == 401, response.text


def test_the_issuers_keys_are_fetched_with_backoff_and_kept_through_its_outages(monkeypatch):
    import ragfn.core.oidc as oidc

    issuer = DevIssuer("http://issuer.test")
    state = {"fetches": 0, "down": False}
    app = flask.Flask("issuer")

    @app.get("/openid/v1/jwks")
    def jwks():
        state["fetches"] += 1
        return ("down", 503) if state["down"] else flask.jsonify(issuer.jwks())

    served_issuer = Served(app)
    try:
        keys = SigningKeys(f"{served_issuer.url}openid/v1/jwks", lifespan=0.0)
        assert keys.key_for(issuer.token("a", "b")) is not None and state["fetches"] == 1
        for _ in range(20):  # made-up key ids: at most one fetch per REFETCH_SECONDS
            with pytest.raises(Unauthorized):
                keys.key_for(DevIssuer(issuer.issuer).token("a", "b"))
        assert state["fetches"] == 1
        state["down"] = True
        monkeypatch.setattr(oidc, "REFETCH_SECONDS", 0.0)
        assert keys.key_for(issuer.token("a", "b")) is not None  # the refresh failed; the keys it had still verify
        assert state["fetches"] == 2
        empty = SigningKeys(f"{served_issuer.url}openid/v1/jwks")
        with pytest.raises(Exception, match="503"):
            empty.key_for(issuer.token("a", "b"))  # nothing to fall back on: the outage is named
    finally:
        served_issuer.server.shutdown()
