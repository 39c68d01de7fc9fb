"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test suite's networks are tiny: threads gain nothing, and on a busy 2-core machine
    OpenMP threads thrash (200 Adam steps of the paper's MLP: 0.35 s on 1 thread, 47 s on 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
