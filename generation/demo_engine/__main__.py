"""``python -m generation.demo_engine --port N``: run the demo engine."""

from generation.demo_engine.server import main

if __name__ == "__main__":
    main()
