import numpy as np
import pytest
import torch

from teachkit.data.photos import PHOTOS, load_photo, photo_tensor


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_load_offline_as_rgb_uint8(name):
    image = load_photo(name)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert image.std() > 10  # a real photograph, not a blank


def test_photo_tensor_resizes():
    t = photo_tensor("chelsea", size=(64, 96))
    assert t.shape == (3, 64, 96) and t.dtype == torch.uint8


def test_unknown_photo_lists_names():
    with pytest.raises(ValueError, match="unknown photo 'lena'.*astronaut"):
        load_photo("lena")
