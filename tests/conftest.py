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
def shared_data():
    """The real-data root (LAYERWISE_DATA or ../shared/data); skip with a reason where it is absent."""
    from layerwise.data import find_data
    from layerwise.errors import LayerwiseError

    try:
        return find_data("glue/SST-2/dev.tsv").parents[2]
    except LayerwiseError as e:
        pytest.skip(f"real data not available: {e}")
