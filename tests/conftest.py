import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    path = Path(os.environ.get("LORALAB_DATA_DIR", SHARED_DATA))
    if not (path / "rotten_tomatoes").is_dir():
        pytest.fail(f"shared data not found at {path}; set LORALAB_DATA_DIR to ../shared/data")
    return path
