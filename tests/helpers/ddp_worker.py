"""The DistributedDataParallel test's worker (tests/torch_modules/test_ddp.py): trains
rnnkernels.torch's LSTM under DDP with the gloo backend on its share of a
fixed global batch, and saves the final weights (rank 0)."""
import os

import numpy as np

STEPS, GLOBAL_BATCH, T, I, H = 3, 8, 6, 3, 5


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((GLOBAL_BATCH, T, I))
    y = rng.standard_normal((GLOBAL_BATCH, 2))
    lengths = rng.integers(2, T + 1, GLOBAL_BATCH)
    return x, y, lengths


def model():
    import torch

    import rnnkernels.torch as rkt

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rkt.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(2 * H, 2)

        def forward(self, x, lengths):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.rnn(packed)
            return self.head(torch.cat([h[-2], h[-1]], 1))

    return Net().double()


def train(net, batches):
    """STEPS Adam steps of the mean squared error on each rank's batch."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(STEPS):
        for x, y, lengths in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x, lengths), y).backward()
            opt.step()
    return net


def single_process():
    """The one-process weights: the whole global batch each step."""
    import torch

    x, y, lengths = data()
    net = train(model(), [(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths))])
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def run(rank, world, init_file, out_file):
    import torch
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, y, lengths = data()
        share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        net = torch.nn.parallel.DistributedDataParallel(model())
        batch = (torch.from_numpy(x[share]), torch.from_numpy(y[share]), torch.from_numpy(lengths[share]))
        train(net, [batch])
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in net.module.state_dict().items()}, out_file)
        # both ranks done before either tears its process group down: gloo aborts a
        # process ("terminate called without an active exception") whose peer closed the
        # connection under it, which happened once in CI
        dist.barrier()
    finally:
        dist.destroy_process_group()
