"""API keys (``cgk_<prefix>_<secret>``, kept only as a SHA-256) and the per-principal rate limit."""

from __future__ import annotations

import hashlib
import re

import pytest

from gateway.authn import AuthenticationThrottled, ClientRateLimited, LruCache, RateLimited, RateLimiter
from gateway.keys import KEY_PREFIX, digest_of, issue_key, matches, prefix_of

# --- API keys ---------------------------------------------------------------------------------


def test_an_issued_key_has_the_cgk_form_with_a_twelve_hex_digit_prefix():
    key = issue_key()
    assert key.plaintext.startswith(KEY_PREFIX)
    assert KEY_PREFIX == "cgk_"
    assert re.fullmatch(r"[0-9a-f]{12}", key.prefix)
    assert key.plaintext.startswith(f"cgk_{key.prefix}_")
    assert len(key.plaintext) > len(f"cgk_{key.prefix}_") + 40  # 256 random bits in the secret


def test_an_issued_key_round_trips_its_prefix_and_matches_its_digest():
    key = issue_key()
    assert prefix_of(key.plaintext) == key.prefix
    assert matches(key.plaintext, key.digest)


def test_only_a_sha256_of_the_key_is_kept():
    key = issue_key()
    assert key.digest == hashlib.sha256(key.plaintext.encode()).hexdigest() == digest_of(key.plaintext)
    assert key.plaintext not in key.digest


def test_every_issued_key_is_different():
    keys = [issue_key() for _ in range(50)]
    assert len({k.plaintext for k in keys}) == 50
    assert len({k.prefix for k in keys}) == 50


def test_a_tampered_key_does_not_match():
    key = issue_key()
    last = key.plaintext[-1]
    tampered = key.plaintext[:-1] + ("A" if last != "A" else "B")
    assert prefix_of(tampered) == key.prefix
    assert not matches(tampered, key.digest)


def test_a_truncated_or_extended_key_does_not_match():
    key = issue_key()
    assert not matches(key.plaintext[:-1], key.digest)
    assert not matches(key.plaintext + "x", key.digest)


def test_a_key_does_not_match_another_keys_digest():
    one, other = issue_key(), issue_key()
    assert not matches(one.plaintext, other.digest)


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param("", id="empty"),
        pytest.param("cgk_", id="prefix-marker-only"),
        pytest.param("cgk_0123456789ab", id="no-secret-separator"),
        pytest.param("cgk_abc_secret", id="short-prefix"),
        pytest.param("cgk_0123456789abc_secret", id="long-prefix"),
        pytest.param("xyz_0123456789ab_secret", id="wrong-marker"),
        pytest.param("CGK_0123456789ab_secret", id="upper-case-marker"),
        pytest.param("Bearer cgk_0123456789ab_secret", id="with-scheme"),
        pytest.param("0123456789ab_secret", id="no-marker"),
    ],
)
def test_a_malformed_key_has_no_prefix(plaintext):
    assert prefix_of(plaintext) is None


def test_a_secret_may_itself_contain_underscores():
    assert prefix_of("cgk_0123456789ab_se_cr_et") == "0123456789ab"


# --- rate limit -------------------------------------------------------------------------------


def exhaust(limiter: RateLimiter, subject: str, per_minute: int, now: float | None) -> None:
    for _ in range(per_minute):
        limiter.check(subject, per_minute, now=now)


def test_a_burst_up_to_the_per_minute_limit_passes():
    limiter = RateLimiter()
    exhaust(limiter, "consumer:1", 10, now=100.0)


def test_the_request_after_the_burst_is_rate_limited_with_a_retry_after():
    limiter = RateLimiter()
    exhaust(limiter, "consumer:1", 10, now=100.0)

    with pytest.raises(RateLimited) as raised:
        limiter.check("consumer:1", 10, now=100.0)

    error = raised.value
    assert error.code == "gateway.rate_limited"
    assert error.status == 429
    retry_after = int(error.headers["Retry-After"])
    assert retry_after >= 1
    assert error.extra["retry_after_seconds"] == retry_after


def test_refused_requests_stay_refused_until_a_token_has_refilled():
    limiter = RateLimiter()
    exhaust(limiter, "s", 60, now=0.0)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.check("s", 60, now=0.5)


def test_retry_after_is_long_enough_to_get_a_token_back():
    limiter = RateLimiter()
    exhaust(limiter, "s", 6, now=0.0)  # one token every ten seconds
    with pytest.raises(RateLimited) as raised:
        limiter.check("s", 6, now=0.0)
    retry_after = int(raised.value.headers["Retry-After"])
    assert retry_after >= 10

    limiter.check("s", 6, now=float(retry_after))


def test_tokens_refill_with_time_at_the_per_minute_rate():
    limiter = RateLimiter()
    exhaust(limiter, "s", 60, now=0.0)

    limiter.check("s", 60, now=1.0)  # one token per second at 60/min
    with pytest.raises(RateLimited):
        limiter.check("s", 60, now=1.0)

    limiter.check("s", 60, now=3.0)
    limiter.check("s", 60, now=3.0)
    with pytest.raises(RateLimited):
        limiter.check("s", 60, now=3.0)


def test_a_full_minute_restores_the_whole_burst():
    limiter = RateLimiter()
    exhaust(limiter, "s", 30, now=0.0)
    exhaust(limiter, "s", 30, now=60.0)
    with pytest.raises(RateLimited):
        limiter.check("s", 30, now=60.0)


def test_idle_time_does_not_bank_more_than_the_per_minute_capacity():
    limiter = RateLimiter()
    limiter.check("s", 5, now=0.0)
    exhaust(limiter, "s", 5, now=3600.0)
    with pytest.raises(RateLimited):
        limiter.check("s", 5, now=3600.0)


def test_separate_subjects_have_separate_buckets():
    limiter = RateLimiter()
    exhaust(limiter, "consumer:a", 3, now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("consumer:a", 3, now=0.0)

    exhaust(limiter, "consumer:b", 3, now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("consumer:b", 3, now=0.0)


def test_a_flood_of_new_subjects_evicts_the_idlest_not_everyone_so_limits_are_not_reset():
    limiter = RateLimiter(max_tracked=2)
    exhaust(limiter, "a", 2, now=0.0)
    limiter.check("b", 2, now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("a", 2, now=0.0)  # a is now the most recently seen

    limiter.check("c", 2, now=0.0)  # a third subject: b, idle longest, is forgotten

    with pytest.raises(RateLimited):
        limiter.check("a", 2, now=0.0)
    for subject in (f"new-{i}" for i in range(1000)):
        limiter.check(subject, 2, now=0.0)
    assert len(limiter._buckets) == 2


def test_a_refund_gives_one_token_back_and_never_more_than_the_capacity():
    limiter = RateLimiter()
    exhaust(limiter, "s", 3, now=0.0)
    limiter.refund("s", 3, now=0.0)
    limiter.check("s", 3, now=0.0)
    with pytest.raises(RateLimited):
        limiter.check("s", 3, now=0.0)
    fresh = RateLimiter()
    fresh.check("t", 3, now=0.0)
    for _ in range(5):
        fresh.refund("t", 3, now=0.0)
    exhaust(fresh, "t", 3, now=0.0)
    with pytest.raises(RateLimited):
        fresh.check("t", 3, now=0.0)


def test_every_answer_says_where_the_subject_stands_in_ratelimit_headers():
    limiter = RateLimiter()
    quota = limiter.check("s", 60, now=0.0)
    assert quota.headers() == {"RateLimit-Policy": '"minute";q=60;w=60', "RateLimit": '"minute";r=59;t=1'}
    exhaust(limiter, "s", 59, now=0.0)
    with pytest.raises(RateLimited) as raised:
        limiter.check("s", 60, now=0.0)
    assert raised.value.headers["RateLimit"] == '"minute";r=0;t=60'


def test_each_limiter_refuses_with_its_own_code():
    limiter = RateLimiter(error=ClientRateLimited)
    exhaust(limiter, "203.0.113.7", 1, now=0.0)
    with pytest.raises(ClientRateLimited) as raised:
        limiter.check("203.0.113.7", 1, now=0.0)
    assert raised.value.code == "gateway.client_rate_limited"
    assert raised.value.status == 429
    assert AuthenticationThrottled.code == "gateway.auth_throttled"


# --- the bounded caches of keys -----------------------------------------------------------------


def test_the_key_cache_holds_at_most_its_size_and_forgets_the_least_recently_used():
    cache: LruCache[str, int] = LruCache(max_entries=3)
    for i, key in enumerate("abc"):
        cache.put(key, i, expires_at=100.0)
    assert cache.get("a", now=0.0) == 0  # a is used: b is now the least recently used
    cache.put("d", 3, expires_at=100.0)
    assert len(cache) == 3
    assert cache.get("b", now=0.0) is None
    assert [cache.get(key, now=0.0) for key in "acd"] == [0, 2, 3]
    for i in range(10_000):
        cache.put(f"flood-{i}", i, expires_at=100.0)
    assert len(cache) == 3


def test_a_cached_entry_expires():
    cache: LruCache[str, bool] = LruCache(max_entries=10)
    cache.put("p", True, expires_at=10.0)
    assert cache.get("p", now=9.9) is True
    assert cache.get("p", now=10.0) is None
    assert len(cache) == 0


def test_the_limiter_uses_the_monotonic_clock_when_no_time_is_given():
    limiter = RateLimiter()
    exhaust(limiter, "s", 1, now=None)
    with pytest.raises(RateLimited):
        limiter.check("s", 1)
