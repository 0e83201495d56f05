import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every test runs offline
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine run far faster, and steadier, on one intra-op thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data(monkeypatch):
    """The real-data root, also exported as LAYERWISE_DATA so the library finds it from any working
    directory; skip with a reason where it is absent."""
    from fixtures import real_data_dir

    root = real_data_dir()
    if root is None:
        pytest.skip("real data absent: set LAYERWISE_DATA to the shared data root")
    monkeypatch.setenv("LAYERWISE_DATA", str(root))
    return root
