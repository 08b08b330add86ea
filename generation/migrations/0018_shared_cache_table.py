"""The database cache the processes share (django-q2's heartbeats, the dispatcher's
"run again" flag): made by migrate, so a studio started without `manage.py setup`
(gunicorn and the qcluster run directly) has it too. Idempotent, as createcachetable is."""
from django.core.management import call_command
from django.db import migrations


def cache_table_create(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("generation", "0017_pump")]

    operations = [migrations.RunPython(cache_table_create, migrations.RunPython.noop)]
