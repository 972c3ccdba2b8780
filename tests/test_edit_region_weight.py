"""--edit_region_weight: the squared errors where an edit changes the latents count more (edit_diffusion/step.py)."""
from __future__ import annotations

import pytest
import torch

from edit_diffusion.config import EditTrainConfig
from edit_diffusion.scratch import build_noise_scheduler
from edit_diffusion.step import denoising_loss, edit_region_weights


def _pair():
    """(B, 4, 8, 8) edited latents and the input's: the edit moves a 4x4 block by 2 latent stds (capped to 1)
    and a 2x2 block by 0.5; the rest is unchanged (what a local recolour looks like in latent space)."""
    torch.manual_seed(0)
    edited = torch.randn(2, 4, 8, 8)
    inputs = edited.clone()
    inputs[:, :, :4, :4] -= 2.0
    inputs[:, :, 6:, 6:] -= 0.5
    return edited, inputs


def test_weights_follow_the_change_capped_at_one_latent_std():
    edited, inputs = _pair()
    assert edit_region_weights(edited, inputs, 0.0) is None  # the stock uniform MSE
    weights = edit_region_weights(edited, inputs, 3.0)
    assert weights.shape == (2, 1, 8, 8)
    torch.testing.assert_close(weights[:, :, :4, :4], torch.full((2, 1, 4, 4), 4.0))
    torch.testing.assert_close(weights[:, :, 6:, 6:], torch.full((2, 1, 2, 2), 2.5))
    assert torch.all(weights[:, :, 4:6] == 1.0) and torch.all(weights[:, :, :, 4:6] == 1.0)
    assert torch.all(edit_region_weights(edited, edited, 3.0) == 1.0)  # an identity edit: the plain MSE


class _CopyInput(torch.nn.Module):
    """A 'UNet' that predicts the input image's latents: right where the edit keeps them, wrong where it edits."""
    def __init__(self):
        super().__init__()
        self.dtype_probe = torch.nn.Parameter(torch.zeros(()))  # the loss reads the UNet's dtype from a parameter

    def forward(self, model_input, timesteps, hidden, return_dict=False):
        return (model_input[:, 4:],)


def test_a_copy_of_the_input_loses_more_under_the_weighted_loss():
    """x0 prediction, so the target is the edited latents: the copy's error is the edit itself (4 per element
    in the 4x4 block, 0.25 in the 2x2 one); the weighted mean counts those blocks 4x and 2.5x."""
    edited, inputs = _pair()
    scheduler = build_noise_scheduler("sample")
    text, null = torch.zeros(2, 3, 8), torch.zeros(1, 3, 8)

    def loss(weights):
        return denoising_loss(_CopyInput(), None, scheduler, edited, inputs, text, null, 0.0,
                              torch.Generator().manual_seed(0), weights)[0]

    uniform = (16 * 4.0 + 4 * 0.25) / 64
    torch.testing.assert_close(loss(None), torch.tensor(uniform))
    torch.testing.assert_close(loss(torch.ones(2, 1, 8, 8)), torch.tensor(uniform))
    weighted = (16 * 4 * 4.0 + 4 * 2.5 * 0.25) / (16 * 4 + 4 * 2.5 + 44)
    torch.testing.assert_close(loss(edit_region_weights(edited, inputs, 3.0)), torch.tensor(weighted))
    assert weighted > 2 * uniform


def test_a_negative_weight_names_the_flag():
    with pytest.raises(ValueError, match="--edit_region_weight"):
        EditTrainConfig(train_data_dir="data", pretrained_model_name_or_path="m", edit_region_weight=-1.0)
