"""Token verification: the keys a gateway was given, and nothing a token names."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eventlog.errors import ConfigError
from eventlog.settings import AuthSettings, LimitSettings
from gateway.auth import READ, Authenticator, Identity, mint_token
from gateway.errors import Unauthenticated

SECRET = "unit-test-secret-0123456789abcdef0123456789"
LIMITS = LimitSettings()


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "tenant": "acme", "scope": "streams:read",
            "exp": int(time.time()) + 600, **extra}


def hs(**settings: Any) -> Authenticator:
    return Authenticator(AuthSettings(jwt_secret=SECRET, **settings), LIMITS)


def test_an_hs256_token_gives_its_identity() -> None:
    token = mint_token(SECRET, sub="alice", tenant="acme", scope="streams:read admin bogus",
                       ttl_s=60, tier="premium",
                       limits={"maxConcurrentStreams": 3, "requestsPerMinute": 7})
    assert hs().verify(token) == Identity(
        sub="alice", tenant="acme", scopes=frozenset({"streams:read", "admin"}),
        tier="premium", max_concurrent_streams=3, requests_per_minute=7)


#: Time claims are offsets from the moment the test runs (not from collection, which may
#: be many minutes earlier in a full suite): "exp" 60 s ago, "nbf" in 10 minutes.
@pytest.mark.parametrize("bad", [
    {"exp": -60},
    {"nbf": 600},
    {"tenant": ""}, {"tenant": 7}, {"sub": ""}, {"scope": ["admin"]},
    {"tier": "platinum"}, {"limits": {"requestsPerMinute": -1}},
    {"limits": {"maxConcurrentStreams": True}}, {"limits": "many"},
])
def test_bad_claims_are_refused(bad: dict[str, Any]) -> None:
    now = int(time.time())
    bad = {k: now + v if k in ("exp", "nbf") else v for k, v in bad.items()}
    with pytest.raises(Unauthenticated):
        hs().verify(jwt.encode(claims(**bad), SECRET, algorithm="HS256"))


def test_exp_and_sub_are_required() -> None:
    for missing in ("exp", "sub"):
        body = claims()
        del body[missing]
        with pytest.raises(Unauthenticated, match=missing):
            hs().verify(jwt.encode(body, SECRET, algorithm="HS256"))


def test_audience_is_checked_when_set() -> None:
    auth = hs(jwt_audience="tidemark")
    assert auth.verify(jwt.encode(claims(aud="tidemark"), SECRET, algorithm="HS256"))
    for aud in ("other", None):
        body = claims() if aud is None else claims(aud=aud)
        with pytest.raises(Unauthenticated):
            auth.verify(jwt.encode(body, SECRET, algorithm="HS256"))


def test_alg_none_and_unlisted_algorithms_are_refused() -> None:
    with pytest.raises(Unauthenticated, match="not accepted"):
        hs().verify(jwt.encode(claims(scope="admin"), None, algorithm="none"))
    with pytest.raises(Unauthenticated, match="not accepted"):
        hs().verify(jwt.encode(claims(), SECRET * 2, algorithm="HS512"))


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_rs256_with_a_pem_key_and_no_key_from_the_token(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = Authenticator(AuthSettings(jwt_public_key_file=str(_pem(key, tmp_path / "k.pem"))),
                         LIMITS)
    assert auth.verify(jwt.encode(claims(), key, algorithm="RS256")).sub == "alice"
    # An attacker's key, named by URL in the header: never fetched, never trusted.
    evil = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(scope="admin"), evil, algorithm="RS256",
                        headers={"jku": "http://127.0.0.1:1/keys", "kid": "evil"})
    with pytest.raises(Unauthenticated):
        auth.verify(forged)
    # The public key used as an HMAC secret (algorithm confusion) does not verify.
    pem = (tmp_path / "k.pem").read_text()
    with pytest.raises(Unauthenticated):
        auth.verify(jwt.encode(claims(), pem.encode()[:64], algorithm="HS256"))
    assert not auth.can_issue


def test_es256_keys_from_a_local_jwks_by_kid(tmp_path: Path) -> None:
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("a", "b")}
    jwks = {"keys": [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())),
                      "kid": kid, "alg": "ES256", "use": "sig"} for kid, k in keys.items()]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    auth = Authenticator(AuthSettings(jwt_public_key_file=str(tmp_path / "jwks.json")), LIMITS)
    for kid, key in keys.items():
        token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid})
        assert auth.verify(token).tenant == "acme"
    swapped = jwt.encode(claims(), keys["a"], algorithm="ES256", headers={"kid": "b"})
    with pytest.raises(Unauthenticated, match="signature"):
        auth.verify(swapped)
    with pytest.raises(Unauthenticated, match="kid"):
        auth.verify(jwt.encode(claims(), keys["a"], algorithm="ES256",
                               headers={"kid": "nope"}))


def test_with_public_keys_an_hs256_token_is_only_a_read_token(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    auth = Authenticator(AuthSettings(jwt_secret=SECRET,
                                      jwt_public_key_file=str(_pem(key, tmp_path / "k.pem"))),
                         LIMITS)
    with pytest.raises(Unauthenticated, match="read tokens"):
        auth.verify(mint_token(SECRET, sub="a", tenant="t", scope="admin", ttl_s=60))
    read = auth.verify(mint_token(SECRET, sub="a", tenant="t", scope="admin streams:read",
                                  ttl_s=60, stream="s1"))
    assert read.scopes == {READ} and read.stream == "s1"


def test_a_read_token_reads_one_stream_whatever_else_it_claims() -> None:
    auth = hs()
    owner = auth.verify(mint_token(SECRET, sub="alice", tenant="acme", scope="admin",
                                   ttl_s=60))
    token, expires = auth.issue_read_token(owner, "s3-stream")
    identity = auth.verify(token)
    assert (identity.sub, identity.tenant, identity.stream) == ("alice", "acme", "s3-stream")
    assert identity.scopes == {READ} and not identity.has("streams:publish")
    assert expires - time.time() == pytest.approx(3600, abs=5)


def test_configuration_mistakes_stop_the_gateway(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs"):
        Authenticator(AuthSettings(), LIMITS)
    with pytest.raises(ConfigError, match="32 bytes"):
        Authenticator(AuthSettings(jwt_secret="short"), LIMITS)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        Authenticator(AuthSettings(jwt_public_key_file=str(tmp_path / "bad.pem")), LIMITS)
    none = Authenticator(AuthSettings(mode="none"), LIMITS)
    assert not none.enabled and none.anonymous.has("streams:publish")
