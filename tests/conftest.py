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


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory):
    """Run folders of every command (``report_runs.make_runs``) and the page ``layerwise report`` makes of them,
    written once for the report tests: ``(runs by name, page path)``."""
    from report_runs import make_runs
    from threadpoolctl import threadpool_limits

    from layerwise.report.html import write_report

    root = tmp_path_factory.mktemp("report-runs")
    with threadpool_limits(1):  # the probes' BLAS: one thread, as every child process of the tests has
        runs = make_runs(root)
    page = write_report(list(runs.values()), root / "report.html")
    return runs, page
