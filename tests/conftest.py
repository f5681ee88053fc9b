import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def shared_data():
    """Path of ../shared/data (or $MINIGPT_DATA); skips the test when it is absent."""
    from minigpt.data.shared import shared_data_dir

    d = shared_data_dir()
    if d is None:
        pytest.skip("shared data folder not found: set MINIGPT_DATA or place it at ../shared/data")
    return d


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The tests write their caches (GPT-2 vocabulary tables, downloads) into a scratch folder, never into the
    user's ~/.cache/minigpt; subprocesses inherit it. Tests about the cache set their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGPT_CACHE", str(tmp_path_factory.mktemp("minigpt-cache")))
        yield
