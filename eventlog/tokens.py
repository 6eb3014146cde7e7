"""Bearer-token (JWT) verification with the keys a process was given at start, and
nothing else: shared by the gateway (``gateway.auth``, which turns claims into an
identity) and the workers' admin endpoints.

- HS256 with ``TIDEMARK_JWT_SECRET``;
- RS256 / ES256 with the keys of ``TIDEMARK_JWT_PUBLIC_KEY_FILE`` (a PEM public key, or a
  local JWKS file whose keys are picked by ``kid``).

Nothing named in a token (``jku``, ``x5u``, ``kid`` as a URL) is ever fetched; ``alg:
none`` and every algorithm but these three are refused. ``exp`` and ``sub`` are
required, ``nbf`` and (when ``TIDEMARK_JWT_AUDIENCE`` is set) ``aud`` are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from eventlog.errors import ConfigError, InvalidToken
from eventlog.settings import AuthSettings

#: The only algorithms accepted; the key decides which of them a deployment uses.
ALGORITHMS: Final = ("HS256", "RS256", "ES256")
TOKEN_MAX: Final = 8192


class TokenVerifier:
    """Verifies a JWT's signature and standard claims; :class:`InvalidToken` says why
    one does not verify."""

    def __init__(self, auth: AuthSettings) -> None:
        self._settings = auth
        self.secret = auth.jwt_secret or None
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ConfigError("TIDEMARK_JWT_SECRET must be at least 32 bytes (RFC 7518 3.2)")
        self.keys: dict[str | None, tuple[str, Any]] = (
            load_keys(Path(auth.jwt_public_key_file)) if auth.jwt_public_key_file else {})

    @property
    def has_keys(self) -> bool:
        """Whether any verification key (secret or public key) was given."""
        return self.secret is not None or bool(self.keys)

    def claims(self, token: str) -> tuple[dict[str, Any], str]:
        """The token's verified claims and its algorithm."""
        if len(token) > TOKEN_MAX:
            raise InvalidToken("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is not a JWT: {exc}") from exc
        alg = header.get("alg")
        key = self._key_for(alg, header.get("kid"))
        audience = self._settings.jwt_audience or None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[str(alg)], audience=audience,
                leeway=self._settings.jwt_leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": audience is not None})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("the token is for another audience") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("the token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is invalid: {exc}") from exc
        return claims, str(alg)

    def _key_for(self, alg: object, kid: object) -> Any:
        if alg not in ALGORITHMS:
            raise InvalidToken(f"the token's algorithm {alg!r} is not accepted "
                               f"(accepted: {', '.join(ALGORITHMS)})")
        if alg == "HS256":
            if self.secret is None:
                raise InvalidToken("HS256 tokens are not accepted here")
            return self.secret
        entry = self.keys.get(kid if isinstance(kid, str) else None)
        if entry is None and len(self.keys) == 1:
            entry = next(iter(self.keys.values()))
        if entry is None:
            raise InvalidToken("no key for the token's kid")
        key_alg, key = entry
        if key_alg != alg:
            raise InvalidToken(f"the token's algorithm {alg} does not match its key")
        return key


def load_keys(path: Path) -> dict[str | None, tuple[str, Any]]:
    """A PEM public key (one key, any kid) or a JWKS file (keys by kid)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"TIDEMARK_JWT_PUBLIC_KEY_FILE: cannot read {path}: {exc}") from exc
    try:
        if raw.lstrip().startswith(b"{"):
            keys: dict[str | None, tuple[str, Any]] = {}
            for jwk in jwt.PyJWKSet.from_dict(orjson.loads(raw)).keys:
                alg = jwk.algorithm_name
                if alg not in ("RS256", "ES256"):
                    raise ConfigError(f"JWKS key {jwk.key_id!r}: algorithm {alg} is not "
                                      "accepted (RS256 or ES256)")
                keys[jwk.key_id] = (alg, jwk.key)
            return keys
        key = load_pem_public_key(raw)
    except (ValueError, TypeError, jwt.PyJWKError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"TIDEMARK_JWT_PUBLIC_KEY_FILE: {path} is not a PEM public key "
                          f"or a JWKS: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return {None: ("RS256", key)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {None: ("ES256", key)}
    raise ConfigError(f"TIDEMARK_JWT_PUBLIC_KEY_FILE: {path} holds neither an RSA nor an EC key")
