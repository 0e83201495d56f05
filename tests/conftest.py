import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every test runs offline
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared_data():
    """The real-data root (LAYERWISE_DATA or ../shared/data); skip with a reason where it is absent."""
    from layerwise.data import find_data
    from layerwise.errors import LayerwiseError

    try:
        return find_data("glue/SST-2/dev.tsv").parents[2]
    except LayerwiseError as e:
        pytest.skip(f"real data not available: {e}")
