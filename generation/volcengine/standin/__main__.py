"""``python -m generation.volcengine.standin --port N``: run the VolcEngine stand-in."""

from generation.volcengine.standin.server import main

if __name__ == "__main__":
    main()
