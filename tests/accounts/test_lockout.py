"""One sign-in lockout for the three doors: the API's login, the sign-in page and the
admin's login count wrong passwords together, and each refuses a locked-out account
with words its user can read."""
import re
import subprocess
import uuid

import pytest
import requests
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"  # tests/conftest.py make_user
LOCKED_PAGE = "Too many failed sign-in attempts for this account."


def _api(username, password, ip="10.0.0.1"):
    return APIClient().post("/api/v1/auth/login", {"username": username, "password": password}, format="json",
                            REMOTE_ADDR=ip)


def _page(client, username, password, ip="10.0.0.1", **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


def _admin(client, username, password, ip="10.0.0.1"):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=ip)


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_five_wrong_passwords_over_the_three_doors_lock_all_three(make_user, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 5
    make_user("ann", is_staff=True)
    assert _api("ann", "wrong").status_code == 401
    assert _api("ann", "wrong").status_code == 401
    assert _page(client, "ann", "wrong").status_code == 200
    assert _page(client, "ann@example.com", "wrong").status_code == 200  # the same account by its e-mail
    response = _admin(client, "ann", "wrong")
    assert response.status_code == 200 and LOCKED_PAGE not in response.content.decode()

    # The right password now, on every door: refused, saying why and for how long.
    api = _api("ann", PASSWORD)
    assert api.status_code == 429
    error = api.json()["error"]
    assert error["code"] == "throttled" and "Too many failed sign-in attempts" in error["message"]
    assert 0 < error["retry_after"] <= settings.EASEL_LOGIN_FAILURE_WINDOW
    assert api["Retry-After"] == str(error["retry_after"])

    page = _page(client, "ann", PASSWORD)
    assert page.status_code == 200 and not _signed_in(client)
    assert re.search(LOCKED_PAGE + r" Try again in 1[45] minutes\.", page.content.decode())

    admin = _admin(client, "Ann", PASSWORD)
    assert admin.status_code == 200 and not _signed_in(client)
    assert LOCKED_PAGE in admin.content.decode()

    # Another address, and another account from this one, are not locked out.
    assert _page(client, "ann", PASSWORD, ip="10.0.0.2").status_code == 302 and _signed_in(client)
    make_user("bob")
    assert _api("bob", PASSWORD).status_code == 200


def test_the_lockout_ends_with_the_window(make_user, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 2
    settings.EASEL_LOGIN_FAILURE_WINDOW = 1
    make_user("ann")
    _page(client, "ann", "wrong")
    _api("ann", "wrong")
    assert LOCKED_PAGE in _page(client, "ann", PASSWORD).content.decode()
    import time

    time.sleep(1.2)
    assert _page(client, "ann", PASSWORD).status_code == 302 and _signed_in(client)


def test_a_right_password_on_any_door_clears_the_count(make_user, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 3
    make_user("ann", is_staff=True)
    for _ in range(2):
        _api("ann", "wrong")
    assert _admin(client, "ann", PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        _page(client, "ann", "wrong")
    assert _api("ann", PASSWORD).status_code == 200


def test_the_admin_refusing_a_non_staff_account_is_no_wrong_password(make_user, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 2
    make_user("ann")
    for _ in range(3):
        assert LOCKED_PAGE not in _admin(client, "ann", PASSWORD).content.decode()
    assert _api("ann", PASSWORD).status_code == 200


def test_an_unknown_name_is_locked_out_like_an_account(db, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 2
    _page(client, "nobody", "a")
    _admin(client, "nobody", "b")
    assert LOCKED_PAGE in _page(client, "Nobody", "c").content.decode()


def test_the_page_says_it_in_chinese(make_user, client, settings):
    settings.EASEL_LOGIN_MAX_FAILURES = 1
    make_user("ann")
    _page(client, "ann", "wrong")
    text = _page(client, "ann", PASSWORD, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert LOCKED_PAGE not in text and "登录失败次数过多" in text


# --- across processes: a real gunicorn with two workers sharing Redis -----------------


def _redis_up() -> bool:
    try:
        import redis

        return redis.Redis.from_url("redis://127.0.0.1:6379/13", socket_connect_timeout=1).ping()
    except Exception:
        return False


def _csrf(url: str) -> str:
    # A fresh connection each time: the kernel hands it to either worker.
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return response.cookies["csrftoken"]


def _form_post(url: str, username: str, password: str) -> requests.Response:
    token = _csrf(url)
    return requests.post(url, data={"username": username, "password": password, "csrfmiddlewaretoken": token,
                                    "next": "/admin/"},
                         cookies={"csrftoken": token}, headers={"Referer": url}, allow_redirects=False,
                         timeout=10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_two_gunicorn_workers_share_one_lockout_through_redis(make_user):
    from tests.generation.test_events import Web

    if not _redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    make_user("ann", is_staff=True)
    prefix = f"easel-test-{uuid.uuid4().hex}"
    web = Web(WEB_CONCURRENCY="2", CACHE_URL=f"redis://127.0.0.1:6379/13?key_prefix={prefix}",
              EASEL_LOGIN_MAX_FAILURES="5").start()
    try:
        page, admin, api = f"{web.url}/accounts/login/", f"{web.url}/admin/login/", f"{web.url}/api/v1/auth/login"
        workers = subprocess.run(["pgrep", "-P", str(web.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, workers

        def api_post(password):
            return requests.post(api, json={"username": "ann", "password": password}, timeout=10)

        assert api_post("wrong").status_code == 401
        assert api_post("wrong").status_code == 401
        assert LOCKED_PAGE not in _form_post(page, "ann", "wrong").text
        assert LOCKED_PAGE not in _form_post(page, "ann", "wrong").text
        assert LOCKED_PAGE not in _form_post(admin, "ann", "wrong").text
        # Each door, asked several times over fresh connections (so both workers answer),
        # refuses the right password.
        for _ in range(3):
            refused = api_post(PASSWORD)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
            for url in (page, admin):
                answer = _form_post(url, "ann", PASSWORD)
                assert answer.status_code == 200 and LOCKED_PAGE in answer.text
                assert "sessionid" not in answer.cookies
    finally:
        web.stop()
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/13")
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
