import pytest
import torch

from fcnseg.train.loss import loss_denominator, pixel_loss


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
