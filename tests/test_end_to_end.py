"""A small conv net learns two synthetic image classes: the whole engine working together."""
import numpy as np
import pytest

import minimtl as mt
from minimtl import nn
from minimtl.losses import masked_cross_entropy, total_loss
from minimtl.optim import SGD

pytestmark = pytest.mark.train


def two_class_images(count, rng):
    """Class 0: a bright horizontal bar; class 1: a bright vertical bar; both at random places, with noise."""
    images = rng.normal(0, 0.3, (count, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    for image, label in zip(images, labels):
        position = rng.integers(2, 10)
        if label == 0:
            image[0, position, 2:10] += 1.5
        else:
            image[0, 2:10, position] += 1.5
    return images, labels


def test_small_conv_net_reaches_95_percent_training_accuracy():
    rng = np.random.default_rng(0)
    images, labels = two_class_images(256, rng)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, generator=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, generator=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 2, generator=rng),
    )
    optimizer = SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _epoch in range(15):
        order = rng.permutation(len(images))
        for start in range(0, len(images), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            loss = total_loss({"bar": masked_cross_entropy(net(mt.Tensor(images[batch])), labels[batch])},
                              net.decay_parameters(), weight_decay=1e-4)
            loss.backward()
            optimizer.step()
    net.eval()
    with mt.no_grad():
        accuracy = np.mean(net(mt.Tensor(images)).data.argmax(axis=1) == labels)
    assert accuracy >= 0.95, f"training accuracy {accuracy:.3f}"
