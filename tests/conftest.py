import torch

# Small networks on a shared 2-core machine: one intra-op thread is both faster and more repeatable.
torch.set_num_threads(1)
