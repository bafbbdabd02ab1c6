"""MoCo machinery: EMA update, the queue's ring pointer, shuffle-BN, one QPT forward on CPU."""

from __future__ import annotations

import copy

import torch
from torch import nn

from biqabench.components.backbones import TinyBackbone
from biqabench_plugins.qpt.moco import KeyQueue, Projector, QPTModel, momentum_update, shuffled_forward


def test_momentum_update_is_an_ema_of_parameters():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = copy.deepcopy(target)
    momentum_update(online, target, 0.9)
    for o, t, b in zip(online.parameters(), target.parameters(), before.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    momentum_update(online, target, 0.0)
    assert all(torch.equal(o, t) for o, t in zip(online.parameters(), target.parameters()))


def test_queue_writes_at_the_pointer_and_wraps():
    q = KeyQueue(5, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(5))  # MoCo starts from random unit keys
    q.enqueue(torch.tensor([[1.0, 0], [2, 0], [3, 0]]))
    assert int(q.ptr) == 3 and q.keys[:3, 0].tolist() == [1, 2, 3]
    q.enqueue(torch.tensor([[4.0, 0], [5, 0], [6, 0]]))  # wraps around
    assert int(q.ptr) == 1 and q.keys[:, 0].tolist() == [6, 2, 3, 4, 5]
    q.enqueue(torch.arange(14.0).view(7, 2))  # more keys than slots: the newest K stay
    assert sorted(q.keys[:, 0].tolist()) == [4, 6, 8, 10, 12]


def test_shuffled_forward_returns_outputs_in_input_order():
    x = torch.randn(10, 4)
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        assert torch.allclose(shuffled_forward(lin, x, torch.Generator().manual_seed(0), splits=3), lin(x), atol=1e-6)


def test_shuffle_bn_uses_other_batch_statistics():
    """With BatchNorm in train mode, sub-batches of a shuffled batch are normalised with their own
    statistics: a key is not normalised together with exactly the batch its query saw."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    x = torch.randn(16, 4)
    with torch.no_grad():
        whole = net(x)
        split = shuffled_forward(net, x, torch.Generator().manual_seed(1), splits=2)
    assert split.shape == whole.shape and not torch.allclose(split, whole, atol=1e-4)
    with torch.no_grad():  # but each output still belongs to its own input: same rows up to BN stats
        one = shuffled_forward(net, x, torch.Generator().manual_seed(1), splits=1)
    assert torch.allclose(one, whole, atol=1e-5)


def test_projector_shapes():
    assert Projector(64, 32, 16)(torch.randn(5, 64)).shape == (5, 16)
    assert Projector(64, 32, 16, batch_norm=True)(torch.randn(5, 64)).shape == (5, 16)


def test_qpt_forward_trains_the_query_encoder_and_updates_keys_and_queue():
    torch.manual_seed(0)
    model = QPTModel(TinyBackbone(), embed_dim=16, queue_size=64, momentum=0.5)
    b, m, p = 4, 2, 32
    query, key_pos, key_deg = torch.randn(b, 3, p, p), torch.randn(b, 3, p, p), torch.randn(b, m, 3, p, p)
    with torch.no_grad():  # make the key encoder differ from the query encoder, as after training
        for t in model.encoder_k.parameters():
            t.add_(0.1)
    k_before = [t.clone() for t in model.encoder_k.parameters()]
    q_params = [t.clone() for t in model.encoder_q.parameters()]
    loss, stats = model(query, key_pos, key_deg, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and set(stats) >= {"acc", "pos", "deg"}
    loss.backward()
    assert all(t.grad is not None for t in model.encoder_q.parameters())
    assert all(t.grad is None and not t.requires_grad for t in model.encoder_k.parameters())
    for t, before, q in zip(model.encoder_k.parameters(), k_before, q_params):
        assert torch.allclose(t, 0.5 * before + 0.5 * q)  # EMA step before the keys are computed
    assert int(model.queue.ptr) == b * (1 + m)  # positives and degradation negatives enqueued
    assert model.backbone is model.encoder_q.backbone
