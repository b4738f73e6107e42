"""rnnkernels.torch under DistributedDataParallel (gloo, two processes on the
CPU): at the same global batch the weights reach the one-process weights."""
import pytest

torch = pytest.importorskip("torch")

from helpers import ddp_worker  # noqa: E402


@pytest.mark.torch
@pytest.mark.slow
def test_two_gloo_processes_reach_the_one_process_weights(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch build has no gloo backend")
    out = tmp_path / "weights.pt"
    torch.multiprocessing.spawn(ddp_worker.run, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    one = ddp_worker.single_process()
    assert set(ddp) == set(one)
    start = ddp_worker.model().state_dict()
    for name in one:
        assert not torch.allclose(one[name], start[name]), f"{name} did not train"
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-9, atol=1e-11, msg=lambda m: f"{name}: {m}")
