"""Augmentation of training images (kornia, on batches of tensors): never applied to test images.

Mild by default: with 5 to 20 examples per class, strong distortions teach the network more about
the distortions than about the classes.
"""

from __future__ import annotations


def image_augmentation(size: int, *, flip: bool = True):
    """Random resized crop to `size`, horizontal flip (off where mirroring changes the label, e.g.
    text or arrows), rotation up to 10 degrees, and a little colour jitter.

    Takes and returns float NCHW batches in 0..1.
    """
    import kornia.augmentation as K

    steps = [K.RandomResizedCrop((size, size), scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))]
    if flip:
        steps.append(K.RandomHorizontalFlip())
    steps += [K.RandomRotation(degrees=10.0, p=0.5),
              K.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8)]
    return K.AugmentationSequential(*steps)
