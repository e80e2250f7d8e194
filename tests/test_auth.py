"""API keys and HS256 JWTs to a caller identity: every way in, and every way to be refused."""

from __future__ import annotations

import builtins
import json
import time

import pytest

from ragfn.core.auth import ApiKeys, Forbidden, Identity, Unauthorized, authorize
from ragfn.core.errors import ConfigError, RagfnError

pytestmark = pytest.mark.unit
KEY, OTHER_KEY = "sk-acme-0123456789abcdef", "sk-globex-fedcba9876543210"
SECRET = "s" * 64  # long enough for the HS512 test too, so PyJWT does not warn
KEYS = {ApiKeys.hash(KEY): {"tenant": "acme", "groups": ["eng", "ops"], "name": "ci-bot"},
        ApiKeys.hash(OTHER_KEY): {"tenant": "globex", "groups": []}}


@pytest.fixture
def keys() -> ApiKeys:
    return ApiKeys(KEYS, jwt_secret=SECRET)


def token(secret: str = SECRET, **claims: object) -> str:
    jwt = pytest.importorskip("jwt")
    body = {"tenant": "acme", "groups": ["eng"], "sub": "alice", "exp": int(time.time()) + 60}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


def refused(keys: ApiKeys, headers: dict[str, str]) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        keys.authenticate(headers)
    assert caught.value.status == 401 and caught.value.retryable is False
    return caught.value


# -- API keys --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer  {KEY} "},
                                     {"X-API-Key": KEY}, {"x-api-key": KEY}])
def test_a_key_in_either_header_names_its_tenant_and_groups(keys: ApiKeys, headers: dict[str, str]) -> None:
    assert keys.authenticate(headers) == Identity("acme", ("eng", "ops"), "key:ci-bot")


def test_a_key_without_a_name_gets_a_digest_subject(keys: ApiKeys) -> None:
    identity = keys.authenticate({"X-API-Key": OTHER_KEY})
    assert identity.tenant == "globex" and identity.groups == ()
    assert identity.subject == f"key:{ApiKeys.hash(OTHER_KEY)[:12]}" and OTHER_KEY not in identity.subject


def test_werkzeug_headers_work_too(keys: ApiKeys) -> None:
    from werkzeug.datastructures import Headers

    assert keys.authenticate(Headers({"X-Api-Key": KEY})).tenant == "acme"


def test_missing_credentials_say_which_header_to_send(keys: ApiKeys) -> None:
    error = refused(keys, {"Content-Type": "application/json"})
    assert "Authorization: Bearer" in str(error) and "X-API-Key" in str(error)
    assert error.to_dict()["error"] == "Unauthorized"
    refused(keys, {"X-API-Key": "   "})


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", KEY])
def test_a_malformed_authorization_header_is_refused(keys: ApiKeys, header: str) -> None:
    assert "Bearer" in str(refused(keys, {"Authorization": header}))
    assert keys.authenticate({"Authorization": header, "X-API-Key": KEY}).tenant == "acme"


def test_bearer_wins_over_x_api_key(keys: ApiKeys) -> None:
    assert keys.authenticate({"Authorization": f"Bearer {OTHER_KEY}", "X-API-Key": KEY}).tenant == "globex"


def test_an_unknown_key_is_refused_without_echoing_it(keys: ApiKeys) -> None:
    wrong = "sk-acme-0123456789abcdeX"
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"X-API-Key": wrong}):
        error = refused(keys, headers)
        assert wrong not in str(error) and wrong not in json.dumps(error.to_dict())
        assert "unknown API key" in str(error)


def test_unauthorized_and_forbidden_are_final_ragfn_errors() -> None:
    assert issubclass(Unauthorized, RagfnError) and issubclass(Forbidden, RagfnError)
    assert (Forbidden.status, Forbidden.retryable) == (403, False)
    assert Unauthorized.challenge.startswith("Bearer")


def test_from_file_reads_digests(tmp_path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    keys = ApiKeys.from_file(path)
    assert len(keys) == 2 and keys.authenticate({"X-API-Key": KEY}).tenant == "acme"
    assert KEY not in path.read_text()


@pytest.mark.parametrize("content", ["{not json", "[]", json.dumps({KEY: {"tenant": "acme"}}),
                                     json.dumps({ApiKeys.hash(KEY): {"groups": ["eng"]}}),
                                     json.dumps({ApiKeys.hash(KEY): {"tenant": "acme", "groups": "eng"}}),
                                     json.dumps({ApiKeys.hash(KEY): "acme"})])
def test_a_bad_key_file_is_a_config_error(tmp_path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        ApiKeys.from_file(path)
    assert KEY not in str(caught.value)  # a plaintext key listed by mistake is not echoed into logs


def test_an_explicit_empty_tenant_is_the_untenanted_space(tmp_path) -> None:
    from ragfn.retrieval.dense import Caller

    keys = ApiKeys({ApiKeys.hash(KEY): {"tenant": "", "name": "dev"}})
    identity = keys.authenticate({"X-API-Key": KEY})
    assert identity.tenant == "" and identity.subject == "key:dev"
    caller = Caller(identity.tenant, identity.groups)
    assert caller.can_read({"tenant": "", "groups": ["*"]})  # what `ragfn ingest` without --tenant writes
    assert not caller.can_read({"tenant": "acme", "groups": ["*"]})


def test_a_missing_key_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read API key file"):
        ApiKeys.from_file(tmp_path / "absent.json")


def test_a_short_jwt_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        ApiKeys(KEYS, jwt_secret="short")


# -- JWTs ------------------------------------------------------------------------------------------------------

def test_a_valid_jwt_carries_tenant_groups_and_subject(keys: ApiKeys) -> None:
    identity = keys.authenticate({"Authorization": f"Bearer {token()}"})
    assert identity == Identity("acme", ("eng",), "jwt:alice")
    assert keys.authenticate({"Authorization": f"Bearer {token(sub=None)}"}).subject == "jwt"


def test_an_expired_jwt_is_refused(keys: ApiKeys) -> None:
    assert "expired" in str(refused(keys, {"Authorization": f"Bearer {token(exp=int(time.time()) - 120)}"}))


def test_a_jwt_within_the_leeway_is_accepted(keys: ApiKeys) -> None:
    assert keys.authenticate({"Authorization": f"Bearer {token(exp=int(time.time()) - 5)}"}).tenant == "acme"


@pytest.mark.parametrize("claims", [{"exp": None}, {"tenant": None}, {"tenant": ""}, {"groups": None},
                                    {"groups": "eng"}, {"groups": ["eng", 3]}])
def test_a_jwt_missing_claims_is_refused(keys: ApiKeys, claims: dict[str, object]) -> None:
    refused(keys, {"Authorization": f"Bearer {token(**claims)}"})


def test_a_jwt_signed_with_another_secret_is_refused_without_echoing_it(keys: ApiKeys) -> None:
    forged = token(secret="x" * 40)
    error = refused(keys, {"Authorization": f"Bearer {forged}"})
    assert "invalid JWT" in str(error) and forged not in str(error)


def test_only_hs256_is_accepted(keys: ApiKeys) -> None:
    jwt = pytest.importorskip("jwt")
    claims = {"tenant": "acme", "groups": [], "exp": int(time.time()) + 60}
    refused(keys, {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS512')}"})
    unsigned = jwt.encode(claims, None, algorithm="none")
    refused(keys, {"Authorization": f"Bearer {unsigned}"})


def test_a_tampered_or_garbled_jwt_is_refused(keys: ApiKeys) -> None:
    header, _, signature = token().split(".")
    refused(keys, {"Authorization": f"Bearer {header}.{token(tenant='globex').split('.')[1]}.{signature}"})
    refused(keys, {"Authorization": "Bearer a.b.c"})


def test_the_audience_is_checked_when_configured() -> None:
    keys = ApiKeys(KEYS, jwt_secret=SECRET, jwt_audience="ragfn")
    assert keys.authenticate({"Authorization": f"Bearer {token(aud='ragfn')}"}).tenant == "acme"
    refused(keys, {"Authorization": f"Bearer {token(aud='someone-else')}"})
    refused(keys, {"Authorization": f"Bearer {token()}"})


def test_without_a_secret_jwts_are_just_unknown_keys() -> None:
    refused(ApiKeys(KEYS), {"Authorization": f"Bearer {token()}"})


def test_a_jwt_without_pyjwt_names_the_package(keys: ApiKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_jwt(name: str, *args, **kwargs):
        if name == "jwt":
            raise ImportError("No module named 'jwt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jwt)
    with pytest.raises(ConfigError, match="pip install pyjwt"):
        keys.authenticate({"Authorization": "Bearer aaa.bbb.ccc"})
    assert keys.authenticate({"X-API-Key": KEY}).tenant == "acme"  # keys still work without PyJWT


# -- authorize -------------------------------------------------------------------------------------------------

def test_authorize_narrows_but_never_widens() -> None:
    me = Identity("acme", ("eng", "ops"), "key:ci-bot")
    assert authorize(me) is me and authorize(me, tenant="acme") is me
    assert authorize(me, groups=["ops", "ops"]).groups == ("ops",)
    with pytest.raises(Forbidden, match="tenant 'globex'"):
        authorize(me, tenant="globex")
    with pytest.raises(Forbidden, match="finance") as caught:
        authorize(me, groups=["eng", "finance"])
    assert caught.value.status == 403


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"), ("", "holds no key"), ("# only a comment\n\n", "holds no key"),
    ("k" * 64 + "\nshort\n", "key 2 is shorter than 32 bytes"),
])
def test_a_service_key_file_that_cannot_sign_is_refused_at_start_up(tmp_path, content, problem):
    from ragfn.core.service_auth import ServiceKeys

    path = tmp_path / "service-keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as raised:
        ServiceKeys(path)
    assert "RAGFN_SERVICE_KEYS_FILE" in str(raised.value) and "short" not in str(raised.value).split(":")[0]


@pytest.mark.parametrize("entries, problem", [
    ({"k" * 64: {"name": "x", "prefixes": ["s3://b/"]}}, "sha256 hex digest"),  # a plaintext key, not a digest
    ({"a" * 64: {"name": "x"}}, "non-empty list of prefixes"),
    ({"a" * 64: {"name": "x", "prefixes": ["s3://bucket"]}}, "not an s3:// or gs:// bucket prefix"),
    ({"a" * 64: {"name": "x", "prefixes": ["file:///etc/"]}}, "not an s3:// or gs:// bucket prefix"),
    ({"pubsub:push@p.iam.gserviceaccount.com": {"prefixes": ["gs://b/"]}}, "RAGFN_PUBSUB_AUDIENCE"),
])
def test_a_sender_file_that_cannot_work_is_refused(entries, problem):
    from ragfn.ingest.senders import Senders

    with pytest.raises(ConfigError, match=problem) as refused:
        Senders(entries)
    assert "k" * 64 not in str(refused.value)
