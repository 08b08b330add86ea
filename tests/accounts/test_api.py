"""Account API: register, login (username or e-mail), me, tokens hashed, expiring, revocable."""
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from accounts.models import ApiToken as AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Rate-limit and failed-login counters live in the default cache.
    cache.clear()
    yield
    cache.clear()


def _table_dump() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        return repr(cursor.fetchall())


def _login(username="erin", password="correct horse battery", ip="10.0.0.1"):
    return APIClient(REMOTE_ADDR=ip).post("/api/v1/auth/login", {"username": username, "password": password},
                                          format="json")


def test_register_then_me_with_the_bearer_token():
    client = APIClient()
    response = client.post("/api/v1/auth/register", {"username": "ann", "password": "correct horse battery",
                                                      "email": "ann@example.com"}, format="json")
    assert response.status_code == 201, response.content
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    me = client.get("/api/v1/auth/me").json()
    assert me["username"] == "ann" and me["daily_image_quota"] > 0 and me["max_concurrent_tasks"] > 0


def test_register_rejects_weak_password_and_duplicate_username_with_the_error_body(make_user):
    make_user("bob")
    client = APIClient()
    response = client.post("/api/v1/auth/register", {"username": "BOB", "password": "123"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "username" in error["fields"] and "password" in error["fields"]


@pytest.mark.parametrize("login", ["carol", "carol@example.com", "CAROL"])
def test_login_by_username_or_email_returns_token_expiry_user(make_user, login):
    make_user("carol")
    response = APIClient().post("/api/v1/auth/login", {"username": login, "password": "correct horse battery"},
                                format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"token", "expiry", "user"} and body["user"]["username"] == "carol"


def test_wrong_password_is_401_with_the_error_body(make_user):
    make_user("dave")
    response = APIClient().post("/api/v1/auth/login", {"username": "dave", "password": "nope"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert response["WWW-Authenticate"] == "Bearer"


def test_calls_without_or_with_a_bad_token_are_401():
    client = APIClient()
    response = client.get("/api/v1/auth/me")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    client.credentials(HTTP_AUTHORIZATION="Bearer nonsense")
    response = client.get("/api/v1/auth/me")
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"
    assert response["WWW-Authenticate"] == "Bearer"


def test_tokens_are_stored_hashed(make_user):
    make_user("erin")
    token = APIClient().post("/api/v1/auth/login", {"username": "erin", "password": "correct horse battery"},
                             format="json").json()["token"]
    dump = _table_dump()
    assert token not in dump and token[8:] not in dump


def test_expired_token_is_refused(make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    assert client.get("/api/v1/auth/me").status_code == 200
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/auth/me").status_code == 401


def test_owner_lists_and_revokes_their_tokens_only(make_user, api_client_for):
    owner, other = make_user(), make_user()
    client = api_client_for(owner)
    second = api_client_for(owner)
    other_client = api_client_for(other)
    tokens = client.get("/api/v1/auth/tokens").json()["results"]
    assert len(tokens) == 2 and all("token" not in t for t in tokens)
    other_key = AuthToken.objects.get(user=other).token_key
    assert client.delete(f"/api/v1/auth/tokens/{other_key}").status_code == 404
    assert other_client.get("/api/v1/auth/me").status_code == 200
    mine = [t["token_key"] for t in tokens]
    for key in mine:
        assert client.delete(f"/api/v1/auth/tokens/{key}").status_code in (204, 401)
    assert second.get("/api/v1/auth/me").status_code == 401


# --- personal tokens --------------------------------------------------------------


def test_create_a_named_token_shown_once_hashed_at_rest_and_expiring(make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    response = client.post("/api/v1/auth/tokens", {"name": "backup script", "expires_in_days": 7}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    token = body["token"]
    assert body["name"] == "backup script" and body["current"] is False and token.startswith(body["token_key"])
    expiry = AuthToken.objects.get(token_key=body["token_key"]).expiry
    assert abs(expiry - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    # It works, it is never shown again, and only its hash is stored.
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert script.get("/api/v1/auth/me").json()["username"] == user.username
    listed = script.get("/api/v1/auth/tokens").json()["results"]
    assert {t["name"] for t in listed} >= {"backup script"} and all("token" not in t for t in listed)
    assert [t["current"] for t in listed if t["token_key"] == body["token_key"]] == [True]
    assert token not in repr(listed)
    dump = _table_dump()
    assert token not in dump and token[len(body["token_key"]):] not in dump
    # Expired: refused, and gone from the list.
    AuthToken.objects.filter(token_key=body["token_key"]).update(expiry=timezone.now() - timedelta(seconds=1))
    assert script.get("/api/v1/auth/me").status_code == 401
    assert body["token_key"] not in [t["token_key"] for t in client.get("/api/v1/auth/tokens").json()["results"]]


def test_token_lifetime_defaults_and_bounds(make_user, api_client_for, settings):
    client = api_client_for(make_user())
    body = client.post("/api/v1/auth/tokens", {"name": "default", "expires_in_days": None}, format="json").json()
    expiry = AuthToken.objects.get(token_key=body["token_key"]).expiry
    assert abs(expiry - (timezone.now() + settings.REST_KNOX["TOKEN_TTL"])) < timedelta(minutes=1)
    assert client.post("/api/v1/auth/tokens", {"name": "a year", "expires_in_days": 365},
                       format="json").status_code == 201
    for bad in ({"name": "x", "expires_in_days": 0}, {"name": "x", "expires_in_days": 366},
                {"expires_in_days": 3}, {"name": "", "expires_in_days": 3}):
        response = client.post("/api/v1/auth/tokens", bad, format="json")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid", bad


def test_token_limit_per_user(make_user, api_client_for, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 2}
    client = api_client_for(make_user())  # one live token already
    assert client.post("/api/v1/auth/tokens", {"name": "second"}, format="json").status_code == 201
    response = client.post("/api/v1/auth/tokens", {"name": "third"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "token_limit"


def test_revoked_token_stops_working_at_once(make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    body = client.post("/api/v1/auth/tokens", {"name": "bot"}, format="json").json()
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert bot.get("/api/v1/auth/me").status_code == 200
    assert client.delete(f"/api/v1/auth/tokens/{body['token_key']}").status_code == 204
    assert bot.get("/api/v1/auth/me").status_code == 401
    assert client.delete(f"/api/v1/auth/tokens/{body['token_key']}").status_code == 404
    assert client.get("/api/v1/auth/me").status_code == 200


# --- sign-in limits ---------------------------------------------------------------


def _rates(settings, **rates):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], **rates}
    settings.REST_FRAMEWORK = rest


def test_login_is_rate_limited_per_ip(make_user, settings):
    _rates(settings, login="3/min")
    make_user("erin")
    for _ in range(3):
        assert _login(ip="10.0.0.1").status_code == 200
    response = _login(ip="10.0.0.1")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert response.json()["error"]["retry_after"] == int(response["Retry-After"])
    assert _login(ip="10.0.0.2").status_code == 200


def test_repeated_failed_logins_lock_that_username_from_that_ip(make_user, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 3
    make_user("erin")
    for _ in range(3):
        assert _login(password="wrong", ip="10.0.0.1").status_code == 401
    # Even the right password is refused now, with the time to wait.
    response = _login(ip="10.0.0.1")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "throttled" and 0 < error["retry_after"] <= settings.EASEL_LOGIN_FAILURE_WINDOW
    assert response["Retry-After"] == str(error["retry_after"])
    # The owner elsewhere, and other accounts from that IP, are not locked out.
    assert _login(ip="10.0.0.9").status_code == 200
    make_user("frank")
    assert _login(username="frank", ip="10.0.0.1").status_code == 200


def test_a_successful_login_clears_the_failure_count(make_user, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 3
    make_user("erin")
    for _ in range(2):
        _login(password="wrong")
    assert _login().status_code == 200
    for _ in range(2):
        _login(password="wrong")
    assert _login().status_code == 200


# --- every token counts: sign-ins retire their oldest, personal tokens stay ---------------------


def test_sign_ins_stay_within_the_token_limit_oldest_sign_in_first(make_user, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 5}
    user = make_user("erin")
    from accounts.services import token_create

    personal, _clear = token_create(user=user, name="my script")
    # Far more sign-ins than the limit (from several addresses: sign-ins are rate-limited per IP).
    tokens = [_login(ip=f"10.0.1.{i}").json()["token"] for i in range(12)]
    live = AuthToken.objects.filter(user=user)
    assert live.count() == 5
    assert live.filter(pk=personal.pk).exists()  # never retired to make room
    for token, works in ((tokens[0], False), (tokens[7], False), (tokens[8], True), (tokens[-1], True)):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        assert (client.get("/api/v1/auth/me").status_code == 200) is works
    listed = APIClient()
    listed.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[-1]}")
    kinds = sorted(t["kind"] for t in listed.get("/api/v1/auth/tokens").json()["results"])
    assert kinds == ["personal", "sign-in", "sign-in", "sign-in", "sign-in"]


def test_a_sign_in_is_refused_when_personal_tokens_fill_the_limit(make_user, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 2}
    from accounts.services import token_create

    user = make_user("erin")
    for name in ("a", "b"):
        token_create(user=user, name=name)
    response = _login()
    assert response.status_code == 409 and response.json()["error"]["code"] == "token_limit"
    assert AuthToken.objects.filter(user=user).count() == 2


def test_sign_in_tokens_are_named_in_the_readers_language(make_user):
    make_user("erin")
    token = _login().json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    (listed,) = client.get("/api/v1/auth/tokens", HTTP_ACCEPT_LANGUAGE="zh-hans").json()["results"]
    assert listed["kind"] == "sign-in" and listed["name"] == "登录"
    assert AuthToken.objects.get().name == ""  # stored by kind, not as text in one language


# --- a new password revokes the tokens made with the old one ------------------------------------


def test_changing_the_password_on_the_page_revokes_every_api_token(make_user, api_client_for, client):
    user = make_user("erin")
    api = api_client_for(user)
    assert api.get("/api/v1/auth/me").status_code == 200
    client.force_login(user)
    response = client.post("/accounts/password/", {
        "old_password": "correct horse battery", "new_password1": "a new long passphrase",
        "new_password2": "a new long passphrase"})
    assert response.status_code == 302
    assert api.get("/api/v1/auth/me").status_code == 401
    assert not AuthToken.objects.filter(user=user).exists()
    assert "API tokens were revoked" in client.get(response["Location"]).content.decode()


def test_staff_resetting_a_password_revokes_the_users_tokens(make_user, api_client_for, client):
    user = make_user("erin")
    api = api_client_for(user)
    staff = make_user("boss", is_staff=True, is_superuser=True)
    client.force_login(staff)
    response = client.post(f"/admin/accounts/user/{user.pk}/password/", {
        "password1": "a new long passphrase", "password2": "a new long passphrase", "usable_password": "true"})
    assert response.status_code == 302, response.content[:500]
    assert api.get("/api/v1/auth/me").status_code == 401


def test_a_rehash_at_sign_in_revokes_nothing(make_user, api_client_for, settings):
    # Signing in with a password stored under an older hasher re-saves its hash: not a new password.
    user = make_user("erin")
    api = api_client_for(user)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    assert user.check_password("correct horse battery")
    user.refresh_from_db()
    assert user.password.startswith("pbkdf2_")  # rehashed and saved
    assert api.get("/api/v1/auth/me").status_code == 200
