"""empirical.features: the one eval-mode feature pass behind monitor.embed and evaluate.extract_features."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import evaluate as ev  # noqa: E402
from empirical.augment import normalize_images  # noqa: E402
from empirical.features import encode_images  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from empirical.monitor import embed  # noqa: E402


def _model():
    torch.manual_seed(0)
    return SSLModel("tiny", "linear", num_classes=10)


def test_chunked_pass_is_one_eval_forward_and_restores_mode():
    model = _model()
    model.train()
    images = torch.randint(0, 256, (37, 3, 16, 16), dtype=torch.uint8)
    r, z, logits = encode_images(model, images, batch=10, probe=True)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():  # independent route: one unchunked forward by hand
        r_ref, z_ref = model.encode(normalize_images(images))
        logits_ref = model.probe(r_ref)
    for got, ref in ((r, r_ref), (z, z_ref), (logits, logits_ref)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_monitor_and_evaluate_share_the_pass():
    model = _model()
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    r, z, logits = embed(model, images, batch=8)
    feats = ev.extract_features(model, images, {"projector": "linear"}, batch_size=8)
    np.testing.assert_array_equal(feats["r"], r.double().numpy())
    np.testing.assert_array_equal(feats["z"], z.double().numpy())
    assert feats["r"].dtype == np.float64 and logits.shape == (20, 10)
