"""Per-sample random streams: exact SplitMix64, batch-independent, right distributions."""

import pytest
import torch

from sparring.rng import SampleGenerators, integers, normal, splitmix64, subset, uniform


def test_bits_match_the_pure_python_splitmix64():
    g = SampleGenerators(seed=3, indices=[0, 7, 123456])
    bits = g.bits(5)
    for row, key in zip(bits.tolist(), g._streams.keys.tolist()):
        expected = [v - (1 << 64) if v >> 63 else v for v in splitmix64(key & ((1 << 64) - 1), 5)]
        assert row == expected


def test_a_sample_draws_the_same_alone_in_a_batch_or_in_a_subset():
    big = SampleGenerators(seed=1, indices=range(10, 20))
    alone = SampleGenerators(seed=1, indices=[14])
    first_big, first_alone = uniform(big, torch.empty(10, 3, 4)), uniform(alone, torch.empty(1, 3, 4))
    assert torch.equal(first_big[4], first_alone[0])
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[2, 4]] = True
    second_sub = normal(subset(big, mask), torch.empty(2, 6))
    assert torch.equal(second_sub[1], normal(alone, torch.empty(1, 6))[0])
    # the subset advanced the shared stream: the parent's next draw for row 4 continues after it
    assert torch.equal(uniform(big, torch.empty(10, 2))[4], uniform(alone, torch.empty(1, 2))[0])


def test_streams_differ_across_seeds_and_indices():
    a = uniform(SampleGenerators(0, [0, 1]), torch.empty(2, 100))
    b = uniform(SampleGenerators(1, [0, 1]), torch.empty(2, 100))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a, b)


def test_distributions():
    g = SampleGenerators(0, range(64))
    u = uniform(g, torch.empty(64, 4096))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    z = normal(g, torch.empty(64, 4096, dtype=torch.float64))
    assert z.dtype == torch.float64 and torch.isfinite(z).all()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z.abs() < 1.96).double().mean()) - 0.95) < 0.005
    k = integers(g, 1, 10, 64)
    assert int(k.min()) >= 1 and int(k.max()) <= 9 and len(k.unique()) > 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_equal_cpu_draws():
    cpu = uniform(SampleGenerators(5, range(8)), torch.empty(8, 33))
    gpu = uniform(SampleGenerators(5, range(8)), torch.empty(8, 33, device="cuda"))
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
