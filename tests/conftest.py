import os
from pathlib import Path

import torch

# Small networks on a shared 2-core machine: one intra-op thread is both faster and more repeatable.
torch.set_num_threads(1)

# The biochemical-task data the tests need ship in tests/data (a sha256-checked copy of the files of
# ../shared/data listed in biochem.MANIFEST); a data folder given by the caller wins.
os.environ.setdefault("ADAPTIVE_TEACHER_DATA", str(Path(__file__).parent / "data"))
