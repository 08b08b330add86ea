"""A mixed fleet under a real qcluster (the pump): one demo ComfyUI engine and one VolcEngine stand-in, each on a
real port. Every task goes to a backend that offers its model, two users' tasks all finish, and each VolcEngine
task is submitted exactly once."""
from __future__ import annotations

import pytest

from generation.models import GeneratedImage, GenerationTask
from models_catalog.models import Checkpoint, ComfyBackend
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
def mixed_fleet(engine_catalog, volc_standin):
    from models_catalog.services import backend_check, volc_models_apply

    volc = ComfyBackend.objects.create(
        name="volc", kind=ComfyBackend.KIND_VOLCENGINE, base_url=volc_standin.url,
        access_key_id=volc_standin.access_key_id, secret_access_key=volc_standin.secret_access_key,
        offered_models=["jimeng_t2i_v31"], requests_per_second=20, max_in_flight=2)
    volc_models_apply(backend=volc)
    assert backend_check(backend=volc)
    return {"demo": engine_catalog["backend"], "volc": volc}


def test_each_task_runs_where_its_model_is_and_volcengine_tasks_are_sent_once(
        mixed_fleet, volc_standin, qcluster, make_user, api_client_for):
    volc_standin.faults(generate_seconds=0.5)
    clients = [api_client_for(make_user(name, max_concurrent_tasks=2, daily_image_quota=100))
               for name in ("ada", "bo")]
    ids = {"demo": [], "volc": []}
    for _ in range(3):
        for client in clients:
            for kind, body in (("demo", {"model_name": "demo-sd15"}),
                               ("volc", {"model_name": "jimeng_t2i_v31", "width": 512, "height": 512})):
                response = client.post("/api/v1/generation/create-async", {"prompt": "a lighthouse", **body},
                                       format="json")
                assert response.status_code == 202, response.content
                ids[kind].append(response.json()["id"])

    every = ids["demo"] + ids["volc"]

    def finished():
        rows = list(GenerationTask.objects.filter(pk__in=every))
        return rows if all(t.status in FINISHED for t in rows) else None

    rows = {t.pk: t for t in wait_for(finished, timeout=150, interval=0.5, message="every task to finish")}
    assert all(t.status == "completed" for t in rows.values()), [(t.pk, t.status, t.error_message)
                                                                   for t in rows.values()]
    assert {rows[i].backend_id for i in ids["demo"]} == {mixed_fleet["demo"].pk}
    assert {rows[i].backend_id for i in ids["volc"]} == {mixed_fleet["volc"].pk}
    assert Checkpoint.objects.get(ckpt_name="jimeng_t2i_v31").backends.get() == mixed_fleet["volc"]
    assert volc_standin.stats()["submissions"] == len(ids["volc"])
    assert len({rows[i].provider_task_id for i in ids["volc"]}) == len(ids["volc"])
    assert GeneratedImage.objects.filter(task_id__in=every).count() == len(every)
    # Both users' work went through.
    assert {t.user.username for t in rows.values()} == {"ada", "bo"}
