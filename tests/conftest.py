import warnings

import pytest
import torch


def hopper_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


requires_hopper = pytest.mark.skipif(not hopper_available(), reason="needs an sm_90 (Hopper) GPU")


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs every run (no fixed seed), but printed so a failure can be replayed.
    seed = torch.seed() % (2**31)
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


@pytest.fixture
def quiet_warnings():
    """For modules that call the CPU fallback and the peers on purpose: their warnings are expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
