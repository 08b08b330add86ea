from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run Easel's built-in ComfyUI-compatible demo engine (placeholder pictures, no GPU)."

    # The engine parses its own options (see generation/demo_engine/options.py).
    def run_from_argv(self, argv):
        from generation.demo_engine import main

        args = argv[2:]
        if not any(a.startswith("--output-dir") for a in args):
            args += ["--output-dir", str(settings.DATA_DIR / "demo_engine" / "output")]
        if not any(a.startswith("--input-dir") for a in args):
            args += ["--input-dir", str(settings.DATA_DIR / "demo_engine" / "input")]
        main(args)
