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


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global torch seed, so a test that draws its data from
    the global generator sees the same draws in every run and in any order (CI once drew a box
    whose ReLU sat on its boundary, where two sound relaxations may legitimately differ)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(20261201)
    yield
    torch.random.set_rng_state(state)
