import pytest
import torch

from fcnseg.train.loss import heads_loss, loss_denominator, loss_denominators, pixel_loss


def test_loss_normalisation_and_void():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255
    valid = target != 255
    logp = torch.log_softmax(logits, 1)
    picked = logp.gather(1, target.clamp(max=2)[:, None])[:, 0]
    expected_sum = -(picked[valid]).sum()
    torch.testing.assert_close(pixel_loss(logits, target, normalize=False), expected_sum)
    torch.testing.assert_close(pixel_loss(logits, target), expected_sum / valid.sum())
    w = torch.tensor([1.0, 2.0, 0.5])
    wt = w[target.clamp(max=2)][valid]
    torch.testing.assert_close(
        pixel_loss(logits, target, class_weights=w), -(picked[valid] * wt).sum() / wt.sum()
    )
    void = torch.full_like(target, 255)
    loss = pixel_loss(logits, void)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable


def test_parts_with_the_whole_denominator_add_up_to_the_whole_mean():
    """What training does over ranks and accumulation steps: each part divides by the
    whole's denominator, and the parts' losses and gradients sum to the whole's."""
    logits = torch.randn(4, 3, 6, 7, requires_grad=True)
    target = torch.randint(0, 3, (4, 6, 7))
    target[0] = 255  # the parts have different numbers of valid pixels: 0, 42, 30, 42
    target[2, :, :2] = 255
    w = torch.tensor([0.5, 1.0, 3.0])
    whole = pixel_loss(logits, target, class_weights=w)
    (grad_whole,) = torch.autograd.grad(whole, logits)
    denominator = loss_denominator(target, w)
    assert denominator.item() == w[target[target != 255]].sum().item()
    parts = [
        pixel_loss(logits[i : i + 1], target[i : i + 1], class_weights=w, denominator=denominator)
        for i in range(4)
    ]
    torch.testing.assert_close(sum(parts), whole)
    (grad_parts,) = torch.autograd.grad(sum(parts), logits)
    torch.testing.assert_close(grad_parts, grad_whole)
    # Each part's own mean would weigh the parts equally instead: a different loss.
    own = sum(pixel_loss(logits[i : i + 1], target[i : i + 1], class_weights=w) for i in range(4))
    assert not torch.allclose(own / 4, whole)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_label_smoothing_against_log_softmax_by_hand(weighted, normalize):
    """Pixel of class y: (1-e) w_y (-log p_y) + (e/C) sum_c w_c (-log p_c), void skipped;
    the mean divides by the summed w_y of the non-void pixels (the weights' own mean)."""
    e, n = 0.2, 4
    logits = torch.randn(2, n, 3, 5, dtype=torch.float64)
    target = torch.randint(0, n, (2, 3, 5))
    target[1, 0] = 255
    valid = target != 255
    w = torch.tensor([0.5, 2.0, 1.0, 0.0], dtype=torch.float64) if weighted else torch.ones(n)
    nll = -torch.log_softmax(logits, 1).movedim(1, -1)[valid]  # (P, C): -log p_c per pixel
    y = target[valid]
    per_pixel = (1 - e) * w[y] * nll[torch.arange(len(y)), y] + e / n * (nll * w).sum(1)
    expected = per_pixel.sum() / (w[y].sum() if normalize else 1)
    loss = pixel_loss(logits, target, normalize=normalize, label_smoothing=e,
                      class_weights=w if weighted else None)  # fmt: skip
    torch.testing.assert_close(loss, expected.to(loss.dtype))
    unsmoothed = pixel_loss(logits, target, normalize=normalize,
                            class_weights=w if weighted else None)  # fmt: skip
    assert not torch.allclose(loss, unsmoothed)


def direct(logits, target, normalize):
    """One head's loss written out: -log softmax at each non-void pixel, summed or averaged."""
    valid = target != 255
    picked = torch.log_softmax(logits, 1).gather(1, target.clamp(max=logits.shape[1] - 1)[:, None])
    total = -picked[:, 0][valid].sum()
    return total / valid.sum() if normalize else total


@pytest.mark.parametrize("normalize", [False, True])
def test_two_heads_add_their_own_losses(normalize):
    # SIFT Flow's two SoftmaxWithLoss layers, loss weight 1 each: 33 and 3 classes, each
    # head with its own void pixels and its own normaliser.
    sem = torch.randn(2, 33, 5, 6, requires_grad=True)
    geo = torch.randn(2, 3, 5, 6, requires_grad=True)
    target = torch.stack([torch.randint(0, 33, (2, 5, 6)), torch.randint(0, 3, (2, 5, 6))], 1)
    target[0, 0, :2] = 255  # 12 void semantic pixels
    target[1, 1, :, :1] = 255  # 5 void geometric ones, elsewhere
    loss = heads_loss((sem, geo), target, normalize=normalize)
    expected = direct(sem, target[:, 0], normalize) + direct(geo, target[:, 1], normalize)
    torch.testing.assert_close(loss, expected)
    # The gradient of each head's logits is its own loss's alone.
    grads = torch.autograd.grad(loss, (sem, geo))
    own = torch.autograd.grad(direct(sem, target[:, 0], normalize), sem)[0]
    torch.testing.assert_close(grads[0], own)
    # Parts of an update that divide by the whole's per-head denominators add up to it.
    denominators = loss_denominators(target)
    assert denominators.tolist() == [60 - 12, 60 - 5]
    parts = sum(
        heads_loss((sem[i : i + 1], geo[i : i + 1]), target[i : i + 1], normalize=normalize,
                   denominators=denominators)
        for i in range(2)
    )  # fmt: skip
    torch.testing.assert_close(parts, loss)


def test_one_head_is_pixel_loss():
    logits = torch.randn(2, 4, 3, 5)
    target = torch.randint(0, 4, (2, 3, 5))
    assert loss_denominators(target).tolist() == [30]
    assert torch.equal(heads_loss(logits, target), pixel_loss(logits, target))
    with pytest.raises(ValueError, match="2 heads of logits but 1 label maps"):
        heads_loss((logits, logits), target)
