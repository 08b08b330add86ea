"""Media on S3-compatible storage (STORAGE_URL), against moto's S3 server on a real port.

The whole path a user relies on: a qcluster process stores the images in the bucket,
the owner downloads them through the API, deleting the task removes the objects, and
nothing in the bucket is readable without credentials.
"""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from PIL import Image

from config.storage import FILESYSTEM_BACKEND, S3_BACKEND, storage_from_url
from tests.conftest import Cluster, cluster_env, free_port, wait_for

BUCKET = "easel-media"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "easel-test-key", "AWS_SECRET_ACCESS_KEY": "easel-test-secret"}


# --- STORAGE_URL parsing ------------------------------------------------------------


def test_empty_storage_url_keeps_local_files():
    assert storage_from_url("", environ={}) == {"BACKEND": FILESYSTEM_BACKEND}
    assert storage_from_url("file:///srv/media", environ={}) == {
        "BACKEND": FILESYSTEM_BACKEND, "OPTIONS": {"location": "/srv/media"}
    }


def test_s3_url_is_private_signed_short_lived_and_never_overwrites():
    entry = storage_from_url(
        "s3://bucket/easel/media?endpoint_url=http://127.0.0.1:9000&region=us-east-1", environ=CREDENTIALS
    )
    assert entry == {
        "BACKEND": S3_BACKEND,
        "OPTIONS": {
            "bucket_name": "bucket",
            "location": "easel/media",
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": 300,
            "file_overwrite": False,
            "access_key": "easel-test-key",
            "secret_key": "easel-test-secret",
            "endpoint_url": "http://127.0.0.1:9000",
            "region_name": "us-east-1",
            "addressing_style": "path",
            "signature_version": "s3v4",
        },
    }


def test_credentials_in_the_url_win_over_the_environment():
    options = storage_from_url("s3://AK:S%2Fx@bucket?expire=60&acl=", environ=CREDENTIALS)["OPTIONS"]
    assert (options["access_key"], options["secret_key"]) == ("AK", "S/x")
    assert options["querystring_expire"] == 60 and options["default_acl"] is None
    assert "addressing_style" not in options  # AWS itself: botocore chooses


@pytest.mark.parametrize("url", ["ftp://x", "s3://", "s3://b?bogus=1", "s3://b?access_key=only-key"])
def test_bad_storage_urls_fail_at_start(url):
    with pytest.raises(ImproperlyConfigured):
        storage_from_url(url, environ={})


# --- against a real S3 server -------------------------------------------------------


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    yield {"url": url, "client": client}
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings):
    """This process and the qcluster it starts both store media in the bucket."""
    storage_url = f"s3://{BUCKET}?endpoint_url={s3_server['url']}&region=us-east-1"
    settings.STORAGES = {**settings.STORAGES, "default": storage_from_url(storage_url, environ=CREDENTIALS)}
    return {**s3_server, "storage_url": storage_url}


def keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


@pytest.fixture
def s3_cluster(s3_storage, request, django_db_blocker):
    """A qcluster of our own with S3 storage; the session's (local files) is paused meanwhile.

    Both would take jobs from the same ORM queue, and one storing on local disk would
    leave the rows pointing at files the bucket does not have.
    """
    session_cluster = request.getfixturevalue("qcluster")
    session_cluster.stop()
    env = cluster_env()
    env.update(STORAGE_URL=s3_storage["storage_url"], **CREDENTIALS)
    cluster = Cluster(env)
    try:
        cluster.start()
        # The session cluster's pump went with it: this cluster's own, now.
        from generation.fleet.pump import pumps_ensure
        from generation.models import Pump

        with django_db_blocker.unblock():
            Pump.objects.all().delete()
            pumps_ensure()
        yield cluster
    finally:
        cluster.stop()
        with django_db_blocker.unblock():
            session_cluster.start()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_generation_flow_on_s3(engine_catalog, s3_storage, s3_cluster, make_user, api_client_for):
    from django.core.files.storage import default_storage

    from generation.models import GeneratedImage

    client = s3_storage["client"]
    owner = api_client_for(make_user("s3-painter"))
    response = owner.post("/api/v1/generation/create-async",
                          {"prompt": "a lighthouse on s3", "model_name": "demo-sd15", "batch_size": 2}, format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    state = wait_for(
        lambda: (s := owner.get(f"/api/v1/generation/status/{task_id}").json())["status"]
        in ("completed", "failed", "cancelled") and s,
        timeout=60, interval=0.2, message="the task to finish",
    )
    assert state["status"] == "completed", f"{state}\n{s3_cluster.output()[-2000:]}"

    images = list(GeneratedImage.objects.filter(task_id=task_id))
    names = {name for image in images for name in (image.file.name, image.thumbnail.name)}
    assert len(names) == 4 and names <= keys(client)  # stored by the worker, in the bucket

    # Downloads go through the owner-checked API, streamed from the bucket.
    first = images[0]
    picture = owner.get(f"/api/v1/generation/images/{first.pk}/file")
    assert picture.status_code == 200
    body = b"".join(picture.streaming_content)
    assert body == client.get_object(Bucket=BUCKET, Key=first.file.name)["Body"].read()
    with Image.open(io.BytesIO(body)) as img:
        assert img.size == (64, 64)
    thumb = owner.get(f"/api/v1/generation/images/{first.pk}/thumbnail")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"
    assert b"".join(thumb.streaming_content)[:4] == b"RIFF"
    # Another user gets nothing.
    stranger = api_client_for(make_user("s3-stranger"))
    assert stranger.get(f"/api/v1/generation/images/{first.pk}/file").status_code == 404

    # Private objects: no anonymous read; a signed URL works and expires in 5 minutes.
    plain = f"{s3_storage['url']}/{BUCKET}/{first.file.name}"
    assert requests.get(plain, timeout=10).status_code == 403
    signed = default_storage.url(first.file.name)
    assert "X-Amz-Expires=300" in signed and requests.get(signed, timeout=10).content == body

    # Deleting the task through the API removes its objects.
    assert owner.delete(f"/api/v1/generation/{task_id}").status_code == 204
    wait_for(lambda: not (names & keys(client)), timeout=10, message="the objects to be deleted")


@pytest.mark.django_db(transaction=True)
def test_retention_sweeps_orphans_in_the_bucket(s3_storage, settings):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone

    from generation.gallery.retention import retention_run

    client = s3_storage["client"]
    orphan = default_storage.save("results/1/2025/01/9-0-orphan.png", ContentFile(b"x"))
    nested = default_storage.save("thumbs/1/2025/01/9-0.webp", ContentFile(b"x"))
    outside = default_storage.save("backups/keep.txt", ContentFile(b"x"))
    assert retention_run()["orphans_removed"] == 0  # younger than the grace period
    summary = retention_run(now=timezone.now() + timedelta(hours=2))
    assert summary["orphans_removed"] == 2
    assert keys(client) == {outside}
    assert orphan not in keys(client) and nested not in keys(client)
