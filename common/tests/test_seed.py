import random

import albumentations as A
import numpy as np
import torch
from monai.transforms import RandGaussianNoise
from torch.utils.data import DataLoader, Dataset

from common.seed import loader_seed_kwargs, reseed_transforms, seed_everything


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_and_depends_on_rank():
    seed_everything(3)
    a = draws()
    seed_everything(3)
    assert draws() == a
    seed_everything(3, rank=1)
    assert draws() != a


class AugDataset(Dataset):
    """Each item reports the random draws of an albumentations pipeline and a MONAI transform."""

    def __init__(self):
        self.albu = A.Compose([A.GaussNoise(std_range=(0.1, 0.5), p=1.0)], seed=0)
        self.monai = RandGaussianNoise(prob=1.0, std=1.0)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        img = np.zeros((4, 4, 1), np.float32)
        a = self.albu(image=img)["image"].ravel()[:3]
        m = np.asarray(self.monai(np.zeros((1, 4, 4), np.float32))).ravel()[:3]
        return torch.as_tensor(np.concatenate([a, m]))


def run_loader(seed):
    loader = DataLoader(AugDataset(), batch_size=1, num_workers=2, **loader_seed_kwargs(seed))
    return torch.cat(list(loader)).numpy()


def test_workers_get_distinct_but_reproducible_augmentations():
    first = run_loader(11)
    # worker 0 serves items 0, 2, 4, ...; worker 1 serves 1, 3, ...: their first items must differ
    assert not np.allclose(first[0, :3], first[1, :3]), "albumentations draws identical across workers"
    assert not np.allclose(first[0, 3:], first[1, 3:]), "MONAI draws identical across workers"
    np.testing.assert_array_equal(first, run_loader(11))
    assert not np.allclose(first, run_loader(12))


def test_reseed_transforms_finds_nested_pipelines():
    ds = AugDataset()
    assert reseed_transforms(ds, 5) == 2
    a = ds[0]
    reseed_transforms(ds, 5)
    assert torch.equal(a, ds[0])


def test_seed_loader_epoch_makes_the_order_a_function_of_seed_and_epoch():
    import torch
    from torch.utils.data import DataLoader

    from common.seed import make_generator, seed_loader_epoch

    def order(epochs):
        loader = DataLoader(list(range(20)), batch_size=20, shuffle=True, generator=make_generator(0))
        out = []
        for epoch in epochs:
            seed_loader_epoch(loader, 3, epoch)
            out.append(next(iter(loader)).tolist())
        return out

    straight = order([0, 1, 2])
    assert order([2]) == [straight[2]]  # epoch 2 alone (a resumed run) equals epoch 2 after 0 and 1
    assert straight[0] != straight[1]
    assert torch.equal(torch.tensor(order([1])[0]), torch.tensor(straight[1]))
