from django.db import migrations, models


def from_history(apps, schema_editor):
    """Each user's last assignment, read once here so dispatch never reads it again."""
    User = apps.get_model("accounts", "User")
    GenerationTask = apps.get_model("generation", "GenerationTask")
    last = (GenerationTask.objects.filter(assigned_at__isnull=False).values("user_id")
            .annotate(t=models.Max("assigned_at")).values_list("user_id", "t"))
    for user_id, when in last.iterator():
        User.objects.filter(pk=user_id).update(last_served_at=when)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0005_field_names"),
        ("generation", "0015_task_inputs"),
    ]

    operations = [
        migrations.AddField(
            model_name='user',
            name='last_served_at',
            field=models.DateTimeField(blank=True, editable=False, null=True, verbose_name='last served'),
        ),
        migrations.RunPython(from_history, migrations.RunPython.noop),
    ]
