from django.db import migrations


def forwards(apps, schema_editor):
    # Hourly retention (generation.retention.retention_run): history and storage limits,
    # orphan sweep. update_or_create keeps it idempotent on every host that migrates.
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="easel-retention",
        defaults={"func": "generation.retention.retention_run", "schedule_type": "H", "repeats": -1},
    )


def backwards(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="easel-retention").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0005_share_and_retention"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
