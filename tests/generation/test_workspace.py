"""The generate page as a workspace: the results pane beside the form, the form sent
without leaving the page (JSON answers), and one card's fragment for the page's script."""
from __future__ import annotations

import html

import pytest
from django.urls import reverse

from generation.models import GenerationTask, TaskStatus
from tests.generation import test_pages as pages
from tests.generation.test_pages import XSS, form_data, make_task

# The page tests' fixtures, shared (the users, a checkpoint, a finished picture).
alice, alice_client, bob, bob_client = pages.alice, pages.alice_client, pages.bob, pages.bob_client
backend, checkpoint, completed_image, media = pages.backend, pages.checkpoint, pages.completed_image, pages.media

JSON = {"HTTP_ACCEPT": "application/json"}


def test_a_json_post_answers_the_new_tasks_card(alice_client, alice, checkpoint):
    response = alice_client.post(reverse("generation:generate"), form_data(seed="7", prompt=XSS), **JSON)
    assert response.status_code == 201
    task = GenerationTask.objects.get()
    answer = response.json()
    assert answer["id"] == task.pk and answer["url"] == reverse("generation:task", args=[task.pk])
    card = answer["card"]
    assert f'data-task-id="{task.pk}"' in card
    # A running card says where to follow it and where to fetch its finished form.
    assert f'data-state-url="{reverse("generation:task_state", args=[task.pk])}"' in card
    assert f'data-card-url="{reverse("generation:task_card", args=[task.pk])}"' in card
    assert "<progress" in card
    # What the user wrote is escaped in the fragment.
    assert XSS not in card and html.escape(XSS) in card
    assert task.user == alice and task.seed == 7


def test_several_json_posts_queue_several_runs(alice_client, checkpoint):
    ids = [alice_client.post(reverse("generation:generate"), form_data(), **JSON).json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert GenerationTask.objects.filter(pk__in=ids, status=TaskStatus.PENDING).count() == 3


def test_a_bad_form_answers_400_with_its_errors(alice_client, checkpoint):
    response = alice_client.post(
        reverse("generation:generate"), form_data(size="custom", width="100", height="512", prompt=""), **JSON
    )
    assert response.status_code == 400
    assert not GenerationTask.objects.exists()
    answer = response.json()
    assert set(answer["fields"]) >= {"width", "prompt"}
    assert answer["fields"]["width"]["id"] == "id_width"
    assert all(isinstance(m, str) and m for m in answer["fields"]["width"]["messages"])


def test_the_daily_quota_is_a_readable_400(alice_client, alice, checkpoint, monkeypatch):
    from generation.errors import GenerationError

    def refuse(**kwargs):
        raise GenerationError("You have used today's quota.")

    monkeypatch.setattr("generation.web.generate.generation_create", refuse)
    response = alice_client.post(reverse("generation:generate"), form_data(), **JSON)
    assert response.status_code == 400
    assert "You have used today&#x27;s quota." in response.json()["summary"] or \
        "You have used today's quota." in response.json()["summary"]


def test_without_script_the_post_still_redirects_to_the_task(alice_client, checkpoint):
    response = alice_client.post(reverse("generation:generate"), form_data())
    task = GenerationTask.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:task", args=[task.pk])


def test_the_card_fragment_is_the_owners_only(alice_client, bob_client, completed_image):
    url = reverse("generation:task_card", args=[completed_image.task_id])
    assert bob_client.get(url).status_code == 404
    response = alice_client.get(url)
    assert response.status_code == 200
    card = response.content.decode()
    assert card.lstrip().startswith("<li") and "<html" not in card
    # A finished card: the full-size viewer, download, the settings to reuse, vary, use as source, delete.
    image_url = reverse("generation:image", args=[completed_image.pk])
    assert f'data-full="{image_url}"' in card and f'href="{image_url}?download=1"' in card
    assert reverse("generation:image_use_as_source", args=[completed_image.pk]) in card
    assert reverse("generation:task_vary", args=[completed_image.task_id]) in card
    assert reverse("generation:task_delete", args=[completed_image.task_id]) in card
    assert reverse("generation:task_share", args=[completed_image.task_id]) in card
    assert "prompt=a+red+fox" in card and "seed=42" in card and "data-use-settings" in card
    assert "data-state-url" not in card  # nothing left to follow
    assert "just now" in card


def test_the_card_fragment_needs_sign_in(client, completed_image):
    response = client.get(reverse("generation:task_card", args=[completed_image.task_id]))
    assert response.status_code == 302


def test_the_results_pane_lists_only_the_users_own_runs_newest_first(alice_client, alice, bob, checkpoint):
    older = make_task(alice, prompt="alice older")
    newer = make_task(alice, prompt="alice newer")
    make_task(bob, prompt="bob secret")
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert "bob secret" not in page
    assert page.index(f'data-task-id="{newer.pk}"') < page.index(f'data-task-id="{older.pk}"')
    assert 'data-ws-results' in page and 'src="/static/js/workspace.js"' in page


def test_the_results_pane_shows_the_last_twelve(alice_client, alice, checkpoint):
    tasks = [make_task(alice, prompt=f"run {n}") for n in range(14)]
    page = alice_client.get(reverse("generation:generate")).content.decode()
    assert page.count("data-ws-card ") + page.count("data-ws-card>") == 12
    assert f'data-task-id="{tasks[0].pk}"' not in page and f'data-task-id="{tasks[-1].pk}"' in page


def test_use_these_settings_refills_the_form(alice_client, completed_image, checkpoint):
    card = alice_client.get(reverse("generation:task_card", args=[completed_image.task_id])).content.decode()
    href = html.unescape(card.split('data-use-settings')[0].rsplit('href="', 1)[1].split('"')[0])
    form = alice_client.get(href).context["form"]
    for name, value in {"prompt": "a red fox", "steps": "20", "seed": "42", "cfg": "7.0"}.items():
        assert str(form[name].value()) == value, name


def test_delete_from_a_card_returns_to_the_workspace(alice_client, completed_image, media):
    response = alice_client.post(
        reverse("generation:task_delete", args=[completed_image.task_id]),
        {"confirm": "yes", "next": reverse("generation:generate")},
    )
    assert response.status_code == 302 and response["Location"] == reverse("generation:generate")
    assert not GenerationTask.objects.exists()


def test_without_script_the_delete_confirmation_returns_to_the_workspace(alice_client, completed_image, media):
    url = reverse("generation:task_delete", args=[completed_image.task_id])
    page = alice_client.post(url, {"next": reverse("generation:generate")}).content.decode()
    # The confirmation page carries `next` on, and "Keep it" goes back there too.
    assert f'name="next" value="{reverse("generation:generate")}"' in page
    assert f'href="{reverse("generation:generate")}"' in page
    assert GenerationTask.objects.exists()
    response = alice_client.post(url, {"confirm": "yes", "next": reverse("generation:generate")})
    assert response["Location"] == reverse("generation:generate")


def test_a_cards_actions_answer_json_for_the_workspace(alice_client, alice, completed_image, media, checkpoint):
    task_id = completed_image.task_id
    varied = alice_client.post(reverse("generation:task_vary", args=[task_id]), **JSON)
    assert varied.status_code == 201
    new = varied.json()
    assert new["id"] != task_id and f'data-task-id="{new["id"]}"' in new["card"]
    cancelled = alice_client.post(reverse("generation:task_cancel", args=[new["id"]]), **JSON)
    assert cancelled.status_code == 200 and "ws-card--cancelled" in cancelled.json()["card"]
    assert cancelled.json()["message"] == f"Task #{new['id']} cancelled."
    # Cancelling again is refused, said beside the card.
    again = alice_client.post(reverse("generation:task_cancel", args=[new["id"]]), **JSON)
    assert again.status_code == 409 and again.json()["message"]
    shared = alice_client.post(reverse("generation:task_share", args=[task_id]), **JSON)
    assert shared.status_code == 200 and "Shared: see the link" in shared.json()["card"]
    deleted = alice_client.post(reverse("generation:task_delete", args=[new["id"]]), {"confirm": "yes"}, **JSON)
    assert deleted.status_code == 200 and deleted.json()["card"] is None
    assert not GenerationTask.objects.filter(pk=new["id"]).exists()


def test_a_cards_actions_are_the_owners_only(bob_client, completed_image, media):
    for name in ("task_vary", "task_cancel", "task_share", "task_delete"):
        response = bob_client.post(reverse(f"generation:{name}", args=[completed_image.task_id]), {"confirm": "yes"},
                                   **JSON)
        assert response.status_code == 404, name


def test_next_elsewhere_is_ignored(alice_client, completed_image, media):
    response = alice_client.post(
        reverse("generation:task_delete", args=[completed_image.task_id]),
        {"confirm": "yes", "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("generation:history")


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_ended_cards_render(alice_client, alice, status):
    task = make_task(alice, status=status)
    response = alice_client.get(reverse("generation:task_card", args=[task.pk]))
    assert response.status_code == 200 and "data-state-url" not in response.content.decode()
