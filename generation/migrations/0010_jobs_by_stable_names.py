from django.db import migrations

# Schedules store the dotted name of the function they run. Every job now runs under
# its stable name in generation.jobs (the code behind it may move; that name does not).
RENAMED = {"generation.retention.retention_run": "generation.jobs.retention_run"}


def forwards(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for old, new in RENAMED.items():
        Schedule.objects.filter(func=old).update(func=new)


def backwards(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for old, new in RENAMED.items():
        Schedule.objects.filter(func=new).update(func=old)


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0009_translatable_task_messages"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
