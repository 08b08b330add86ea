from django.db import migrations


def forwards(apps, schema_editor):
    # The studio's periodic housekeeping (see generation.jobs.studio_tick): backend
    # health, dispatch, recovery of tasks whose job died, due webhook retries.
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="easel-tick",
        defaults={"func": "generation.jobs.studio_tick", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def backwards(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="easel-tick").delete()


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial"), ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more")]
    operations = [migrations.RunPython(forwards, backwards)]
