"""With DEBUG off (as the run command serves), every error is Easel's own page, styled and
translated, and never Django's debug page; under /api/ it is the API's error body."""
from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

DEBUG_TELLS = ("Using the URLconf", "Django tried these URL patterns", "Traceback", "DEBUG = True")


def page(response) -> str:
    text = response.content.decode()
    for tell in DEBUG_TELLS:
        assert tell not in text, tell
    assert "css/easel.css" in text and "· Easel</title>" in text  # the studio's own look
    return text


@pytest.mark.parametrize("language,words", [("en", "Nothing here"), ("zh-hans", "这里什么都没有")])
def test_a_mistyped_address_shows_the_studios_404(client, language, words):
    response = client.get("/no/such/page/", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 404
    assert words in page(response)


def test_a_revoked_share_link_is_the_studios_404(client):
    response = client.get("/s/revoked-or-never-was/")
    assert response.status_code == 404 and "Nothing here" in page(response)


@pytest.mark.parametrize("language,words", [("en", "This form has expired"), ("zh-hans", "此表单已过期")])
def test_a_form_without_its_csrf_token_gets_the_studios_403(language, words):
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "x", "password": "y"},
                                                      HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 403
    assert words in page(response)


@pytest.mark.urls("tests.api_error_urls")
def test_permission_denied_is_the_studios_403(client):
    response = client.get("/test-deny")
    assert response.status_code == 403 and "You may not open this" in page(response)


@pytest.mark.parametrize("language,words", [("en", "could not read this request"), ("zh-hans", "无法读取此请求")])
def test_a_bad_host_header_gets_the_studios_400(client, language, words):
    response = client.get("/", HTTP_HOST="evil.example", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 400
    assert words in page(response)


def test_a_bad_host_under_the_api_gets_the_error_body(client):
    response = client.get("/api/v1/models", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.urls("tests.api_error_urls")
def test_a_server_error_is_the_studios_500(client):
    client.raise_request_exception = False
    response = client.get("/test-boom", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 500 and "出错了" in page(response)
