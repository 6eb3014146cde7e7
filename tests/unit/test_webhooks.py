"""Webhooks without Kafka: the Standard Webhooks signature (the spec project's test
vector, and its own library verifying ours), secrets, the backoff's bounds, the SSRF
classifier and allow-list, the commit bookkeeping and the delivery body's schema."""

from __future__ import annotations

import ipaddress
import random
import time

import orjson
import pytest
from jsonschema import Draft202012Validator
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from eventlog.targets import (
    AllowListError,
    UnsafeTarget,
    check_url,
    parse_allow_list,
    refusal,
)
from eventlog.webhooks import dead_letter_id, new_secret, secret_key
from schemas.validation import load_schema
from workers.signing import StandardSigner, standard_signature
from workers.webhook_http import GuardedResolver, backoff
from workers.webhooks import Progress, payload

# The test vector of the Standard Webhooks project's libraries (libraries/python/tests/
# test_webhooks.py::test_sign_function, the same in its other languages).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_standard_signature_matches_the_spec_projects_vector() -> None:
    assert standard_signature(msg_id=VECTOR_ID, timestamp=VECTOR_TS, body=VECTOR_BODY,
                              secret=VECTOR_SECRET) == VECTOR_SIGNATURE


def test_the_official_library_verifies_our_headers_and_refuses_a_changed_body() -> None:
    secret = new_secret()
    body = b'{"type":"result","data":{"text":"hi"}}'
    headers = StandardSigner().headers(msg_id="1-0a1b2c3d-3-42", timestamp=int(time.time()),
                                       body=body, secret=secret)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert StandardWebhook(secret).verify(body, headers) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(body.replace(b"hi", b"ho"), headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_secret()).verify(body, headers)


def test_secrets_are_whsec_base64_of_24_to_64_bytes() -> None:
    assert len(secret_key(new_secret())) == 32
    assert secret_key(VECTOR_SECRET)  # 24 bytes: the spec's minimum
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64", "whsec_" + "QUFB" * 4,
                "whsec_" + "QUFB" * 30):
        with pytest.raises(ValueError):
            secret_key(bad)


def test_dead_letter_ids_are_stable_and_per_tenant() -> None:
    one = dead_letter_id("acme", "wh_1", "1-0a1b2c3d-0-5")
    assert one == dead_letter_id("acme", "wh_1", "1-0a1b2c3d-0-5")
    assert one != dead_letter_id("other", "wh_1", "1-0a1b2c3d-0-5")
    assert one.startswith("dl_") and len(one) == 35


def test_backoff_is_exponential_with_full_jitter_and_bounded() -> None:
    top = [backoff(n, base_s=0.5, max_s=10.0, rng=lambda lo, hi: hi) for n in range(1, 9)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff(3, base_s=0.5, max_s=10.0, rng=lambda lo, hi: lo) == 0.0
    rng = random.Random(7)
    samples = [backoff(n, base_s=1.0, max_s=30.0, rng=rng.uniform)
               for n in range(1, 200) for _ in range(5)]
    assert all(0.0 <= s <= 30.0 for s in samples)
    assert len({round(s, 6) for s in samples}) > 900  # jittered, not a fixed schedule
    assert backoff(10_000, base_s=1.0, max_s=30.0, rng=lambda lo, hi: hi) == 30.0


def test_backoff_honours_retry_after_within_the_cap() -> None:
    low = {"base_s": 1.0, "max_s": 60.0, "rng": lambda lo, hi: lo}
    assert backoff(1, retry_after_s=20.0, **low) == 20.0  # type: ignore[arg-type]
    assert backoff(1, retry_after_s=9999.0, **low) == 60.0  # type: ignore[arg-type]


@pytest.mark.parametrize(("address", "reason"), [
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("127.0.0.1", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("100.64.0.1", "not globally routable"), ("240.0.0.1", "reserved"),
    ("fc00::1", "private"), ("fe80::1", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"), ("8.8.8.8", None), ("1.1.1.1", None),
    ("2606:4700:4700::1111", None),
])
def test_the_classifier_names_every_non_public_range(address: str, reason: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


async def test_registration_checks_refuse_ssrf_targets_unless_allowed() -> None:
    none = parse_allow_list("")
    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                "http://127.0.0.1:8080/hook", "http://[::1]/", "http://localhost/",
                "http://[::ffff:127.0.0.1]/", "ftp://8.8.8.8/", "http://user:pw@8.8.8.8/",
                "http:///nohost", "http://8.8.8.8:99999/", "javascript:alert(1)"):
        with pytest.raises(UnsafeTarget):
            await check_url(url, none)
    assert await check_url("https://8.8.8.8/hook", none) == [ipaddress.ip_address("8.8.8.8")]
    loopback = parse_allow_list("127.0.0.0/8, ::1")
    assert await check_url("http://127.0.0.1:8080/hook", loopback)
    assert await check_url("http://[::1]/", loopback)
    with pytest.raises(UnsafeTarget):
        await check_url("http://10.0.0.1/", loopback)
    assert await check_url("http://hooks.internal/x", parse_allow_list("hooks.internal")) == []


def test_the_allow_list_takes_hosts_and_cidrs_only() -> None:
    allow = parse_allow_list("127.0.0.1/32,10.8.0.0/16,Hooks.Internal.")
    assert allow.hosts == {"hooks.internal"}
    assert allow.permits(ipaddress.ip_address("10.8.3.4"))
    assert not allow.permits(ipaddress.ip_address("10.9.0.1"))
    for bad in ("http://x/", "10.0.0.0/99", "a b", "under_score.example"):
        with pytest.raises(AllowListError):
            parse_allow_list(bad)


async def test_the_guarded_resolver_refuses_a_name_of_a_private_address() -> None:
    with pytest.raises(OSError, match="loopback"):
        await GuardedResolver(parse_allow_list("")).resolve("localhost", 80)
    resolver = GuardedResolver(parse_allow_list("127.0.0.0/8,::1"))
    try:
        assert await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


def test_an_offset_commits_only_when_it_and_every_earlier_delivery_finished() -> None:
    progress = Progress()
    assert progress.commit_point() is None
    progress.add(10, 0)
    assert progress.commit_point() == 11
    progress.add(11, 2)  # two webhooks
    progress.add(12, 1)
    progress.add(13, 0)
    assert progress.commit_point() == 11
    progress.finish(12)
    progress.finish(11)
    assert progress.commit_point() == 11  # one delivery of 11 still out
    progress.finish(11)
    assert progress.commit_point() == 14


def test_the_delivery_body_matches_its_schema() -> None:
    envelope = {"stream": "s3-1-0-1-aaaaaaaaaaaaaaaaaaaaaaaa-0011223344556677", "seq": 4,
                "type": "partial_result", "ts": 1764000000123,
                "data": {"chunk": "hi ", "chunkIndex": 3}}
    body = orjson.loads(payload(event_id="1-0a1b2c3d-1-77", envelope=envelope))
    Draft202012Validator(load_schema("webhook_payload")).validate(body)
    assert body["timestamp"] == "2025-11-24T16:00:00.123Z"
    assert (body["eventId"], body["seq"], body["data"]) == ("1-0a1b2c3d-1-77", 4,
                                                             envelope["data"])
