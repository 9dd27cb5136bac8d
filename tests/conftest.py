import os


# Tests never reach the Hub: an accidental download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402


torch.use_deterministic_algorithms(True, warn_only=True)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW", "0") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
